"""
Output flow control: learn when a connection's unsent output drains.

An L{OutputGate} registers itself as the streaming producer of a transport.
Twisted's transports call C{pauseProducing} when their buffer of unsent
output passes their high-water mark (C{bufferSize}, 64 KiB for TCP) on a
C{write}/C{writeSequence}, and C{resumeProducing} once they have written
everything. That is all a protocol can learn without reaching into the
socket, and all this needs:

- HTTP responses: a reply message carrying C{ack_channel} is acknowledged
  with C{{"ok": True}} on that channel once its content is written and the
  output is below the mark (at once when it already is), or with
  C{{"closed": True}} when the connection goes first. A sender that waits
  for those acknowledgements never has more than its window of messages in
  the server's memory, however slowly the client reads.
- WebSockets: bytes written while the transport says it is full are
  counted, so a reply to a client that stopped reading can be refused once
  the count passes a bound.
- Pipelined HTTP requests: the next one waits (L{OutputGate.when_drained})
  until the client has read the previous response, so a client that
  pipelines many requests and reads nothing holds one response in memory,
  not all of them.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

ACK_OK = {"ok": True}
ACK_CLOSED = {"closed": True}


@implementer(IPushProducer)
class OutputGate:
    """
    Watch one transport's unsent output as its streaming producer.

    @param transport: an C{IConsumer} transport (TCP, TLS).
    @param send: C{send(channel, message)}, used for acknowledgements.

    @ivar paused: the transport said its buffer is above its high-water mark
        and has not drained since.
    @ivar written: bytes noted with L{note} since the transport last paused us.
    """

    def __init__(self, transport, send):
        self.transport = transport
        self._send = send
        self.paused = False
        self.registered = False
        self.written = 0
        self._acks = []
        self._drained = []
        self._release = False

    def watch(self):
        """Register as the transport's producer (before writing what is to be watched)."""
        self._release = False
        if not self.registered:
            self.registered = True
            self.paused = False
            self.transport.registerProducer(self, True)

    def ack(self, channel):
        """Send C{ok} on C{channel} once the output is below the high-water mark."""
        if self.paused:
            self._acks.append(channel)
        else:
            self._send(channel, ACK_OK)

    def when_drained(self, callback):
        """Call C{callback()} once the output is below the high-water mark (now if it is)."""
        if self.paused:
            self._drained.append(callback)
        else:
            callback()

    def note(self, size):
        """Count C{size} bytes just written (only while the transport is full)."""
        if self.paused:
            self.written += size

    def release(self):
        """Stop watching, once the acknowledgements and callbacks still waiting are done."""
        if self.paused and (self._acks or self._drained):
            self._release = True
        else:
            self._unregister()

    def close(self):
        """The connection is going: C{closed} on every waiting acknowledgement; stop watching."""
        self._drained = []
        self._fail_acks()
        self._unregister()

    def _fail_acks(self):
        acks, self._acks = self._acks, []
        for channel in acks:
            self._send(channel, ACK_CLOSED)

    def _unregister(self):
        self._release = False
        self.paused = False
        if self.registered:
            self.registered = False
            if getattr(self.transport, "producer", self) is self:
                self.transport.unregisterProducer()

    # IPushProducer, called by the transport

    def pauseProducing(self):
        if not self.paused:
            self.paused = True
            self.written = 0

    def resumeProducing(self):
        self.paused = False
        acks, self._acks = self._acks, []
        for channel in acks:
            self._send(channel, ACK_OK)
        drained, self._drained = self._drained, []
        if self._release:
            self._unregister()
        for callback in drained:
            callback()

    def stopProducing(self):
        # The connection is lost; the transport forgets us.
        self.registered = False
        self._release = False
        self.paused = False
        self._drained = []
        self._fail_acks()
