"""
WebSocket connections through autobahn: frames become ``websocket.*`` messages.

The opening handshake waits for the connect consumer's answer (an accept,
a first frame, a reject or the connect timeout); see the accept protocol in
L{WebSocketProtocol.reply}.
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.logger import Logger

from ..exceptions import ChannelFull, LayerUnavailable
from ._flow import OutputGate

_OPEN = WebSocketServerProtocol.STATE_OPEN
_CLOSED = WebSocketServerProtocol.STATE_CLOSED
_CONNECTING = WebSocketServerProtocol.STATE_CONNECTING

# Close codes an endpoint may send (RFC 6455 7.4, IANA registry).
_SENDABLE = frozenset([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014])


# Bytes of frames a client may send before its handshake is answered, before we stop reading.
_EARLY_LIMIT = 1 << 16


def _sendable(code):
    return type(code) is int and (code in _SENDABLE or 3000 <= code <= 4999)


class _Timer:
    """A cancellable call, as autobahn's batched timer hands out, on our reactor."""

    __slots__ = ("_call",)

    def __init__(self, call):
        self._call = call

    def cancel(self):
        if self._call.active():
            self._call.cancel()


class _ReactorTimers:
    """Stand-in for autobahn's txaio batched timer that uses an injected reactor."""

    def __init__(self, reactor):
        self._reactor = reactor

    def call_later(self, delay, func, *args, **kwargs):
        return _Timer(self._reactor.callLater(delay, func, *args, **kwargs))


def _accept_deflate(offers):
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def make_websocket_factory(reactor, max_message, ping_interval, ping_timeout):
    """The autobahn factory holding every WebSocket connection's protocol options."""
    factory = WebSocketServerFactory(server="chanserve", reactor=reactor)
    factory.setProtocolOptions(
        maxFramePayloadSize=max_message,
        maxMessagePayloadSize=max_message,
        autoPingInterval=ping_interval,
        autoPingTimeout=ping_timeout if ping_interval else 0,
        openHandshakeTimeout=0,   # our HTTP layer and the connect timeout cover it
        closeHandshakeTimeout=5,
        failByDrop=False,         # send the close code (1002, 1007, 1009) before closing
        utf8validateIncoming=True,
        perMessageCompressionAccept=_accept_deflate,
        # Origins are the application's to judge (allowed_hosts_only,
        # origin_validator); autobahn would refuse "null" (file:// pages,
        # sandboxed frames) before any consumer ran. Daphne allows it too.
        allowNullOrigin=True,
    )
    factory._batched_timer = _ReactorTimers(reactor)
    return factory


class WebSocketProtocol(WebSocketServerProtocol):
    """
    One WebSocket connection, started by L{HTTPProtocol} after an upgrade request.

    Messages on its reply channel (see L{reply}): ``accept`` (bool), ``text``
    (str), ``bytes``, ``close`` (True or a code), optionally ``subprotocol``
    with an accept. The first of ``accept: True``, ``text`` or ``bytes``
    completes the handshake; ``accept: False`` or ``close`` before that
    refuses it with HTTP 403.
    """

    _log = Logger()

    def __init__(self, server, head, client, server_address, scheme):
        super().__init__()
        self.factory = server.websocket_factory
        self.server = server
        self._head = head
        self._client = client
        self._server_address = server_address
        self._scheme = scheme
        self.reply_channel = None
        self.path = None
        self._order = 0
        self._refusing = False  # a websocket.receive could not be sent: the socket is closing
        self._handshake = None       # the Deferred autobahn waits on
        self._accepted = False
        self._rejected = False
        self._connect_sent = False
        self._connect_timer = None
        self._lifetime_timer = None
        self._early = None           # replies that arrived before the socket was open
        self._started = 0.0
        self._paused = False
        self._output = None          # an OutputGate once open: counts unsent output

    # autobahn's own dataReceived formats a debug line on every call
    def dataReceived(self, data):
        self._dataReceived(data)
        if (self.state == _CONNECTING and self._handshake is not None and not self._paused
                and len(self.data) > _EARLY_LIMIT):
            # Frames keep coming before the consumer answered: stop reading until it does.
            self._paused = True
            self.transport.pauseProducing()

    def sendPreparedMessage(self, prepared):
        if self._output is not None:
            self._output.note(len(prepared.payloadHybi))
        # The common case straight to the transport (autobahn's sendData formats a debug line).
        if self._perMessageCompress is None and not self.send_queue:
            self.transport.write(prepared.payloadHybi)
        else:
            super().sendPreparedMessage(prepared)

    def unregisterProducer(self):
        if getattr(self.transport, "producer", True) is not None:
            try:
                self.transport.unregisterProducer()
            except RuntimeError:
                pass

    def processHandshake(self):
        if self._handshake is not None:
            return  # frames sent before our answer wait in self.data
        super().processHandshake()

    # -- handshake -----------------------------------------------------------

    def onConnect(self, request):
        server = self.server
        head = self._head
        self._started = server.reactor.seconds()
        self.reply_channel = server.new_reply_channel()
        self.path = head.path()
        self._offered = request.protocols
        message = {
            "reply_channel": self.reply_channel,
            "scheme": self._scheme,
            "path": self.path,
            "root_path": server.root_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "client": self._client,
            "server": self._server_address,
            "order": 0,
        }
        self._handshake = defer.Deferred()
        unreceivable = server.replies_unreceivable()
        if unreceivable is not None:
            self._connect_not_sent(unreceivable)
            return self._handshake
        server.register(self.reply_channel, self)
        if server.websocket_connect_timeout:
            self._connect_timer = server.reactor.callLater(
                server.websocket_connect_timeout, self._connect_timed_out)
        self._connect_sent = True
        d = server.layer.send("websocket.connect", message)
        d.addErrback(self._connect_not_sent)
        return self._handshake

    def _connect_not_sent(self, failure):
        self._connect_sent = False
        if failure.check(ChannelFull):
            self.server.warn_sometimes("ws-full", "websocket.connect is full; refusing {client} "
                                       "with 503", client=self._client)
            self.server.count("websocket_channel_full")
        elif failure.check(LayerUnavailable):
            self.server.warn_sometimes(
                "ws-unavailable", "Channel layer unavailable ({error}); refusing {client} with 503",
                error=failure.getErrorMessage(), client=self._client)
            self.server.count("websocket_layer_unavailable")
        else:
            self._log.failure("Could not send websocket.connect", failure)
        self._reject(503, "Service Unavailable")

    def _connect_timed_out(self):
        self._connect_timer = None
        self._log.warn("No answer to websocket.connect for {path!r} within {timeout}s; refusing",
                       path=self.path, timeout=self.server.websocket_connect_timeout)
        self._reject(403, "Forbidden")

    def _accept(self, subprotocol):
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None
        self._accepted = True
        offered = self._offered
        if subprotocol is not None and subprotocol not in offered:
            self._log.warn("Subprotocol {chosen!r} was not offered ({offered!r}); using none",
                           chosen=subprotocol, offered=offered)
            subprotocol = None
        if subprotocol is None and offered:
            spoken = self.server.websocket_protocols
            subprotocol = next((p for p in offered if p in spoken), None)
        if not self._handshake.called:
            self._handshake.callback(subprotocol)

    def _reject(self, status, reason):
        if self._accepted or self._rejected or self._handshake is None or self._handshake.called:
            return
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None
        self._rejected = True
        self.server.unregister(self.reply_channel)
        log = self.server.access_log
        if log is not None:
            log.websocket("WSREJECT", self._client, self.path, status)
        self._handshake.errback(ConnectionDeny(status, reason))

    def onOpen(self):
        server = self.server
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if server.websocket_max_buffer and getattr(self.transport, "producer", None) is None:
            self._output = OutputGate(self.transport, server.send_quietly)
            self._output.watch()
        if server.access_log is not None:
            server.access_log.websocket("WSCONNECT", self._client, self.path, None)
        if server.websocket_timeout:
            self._lifetime_timer = server.reactor.callLater(
                server.websocket_timeout, self._lifetime_over)
        early, self._early = self._early, None
        for message in early or ():
            self._deliver(message)

    def _lifetime_over(self):
        self._lifetime_timer = None
        self.close(1000)

    # -- replies -------------------------------------------------------------

    def reply(self, message):
        """Handle one message from this socket's reply channel."""
        if self.state == _CLOSED or self._rejected:
            return
        if not self._accepted:
            accept = message.get("accept")
            has_frame = message.get("text") is not None or message.get("bytes") is not None
            close = message.get("close")
            if accept is False or (close and not has_frame and accept is not True):
                if close == 1011 and accept is not False:
                    # What the worker sends when the connect consumer raised.
                    self._reject(500, "Internal Server Error")
                else:
                    self._reject(403, "Forbidden")
                return
            if accept is True or has_frame:
                self._accept(message.get("subprotocol"))
            else:
                return
        if self.state != _OPEN:
            # Accepted inside onConnect: autobahn opens the socket right after.
            if self.state == _CONNECTING:
                if self._early is None:
                    self._early = []
                self._early.append(message)
            return
        self._deliver(message)

    def _deliver(self, message):
        output = self._output
        if output is not None and output.paused and output.written > self.server.websocket_max_buffer:
            self._overflow()
            return
        text = message.get("text")
        data = message.get("bytes")
        if text is not None and data is not None:
            self._log.error("WebSocket reply to {path!r} has both 'text' and 'bytes'; ignored "
                            "(one frame is one or the other)", path=self.path)
            return
        if text is not None:
            if type(text) is not str:
                self._log.error("websocket reply 'text' must be a str, not {type}",
                                type=type(text).__name__)
            else:
                self.sendPreparedMessage(self.server.prepared(message, text, False))
        elif data is not None:
            if type(data) is not bytes:
                self._log.error("websocket reply 'bytes' must be bytes, not {type}",
                                type=type(data).__name__)
            else:
                self.sendPreparedMessage(self.server.prepared(message, data, True))
        close = message.get("close")
        if close:
            self.close(1000 if close is True else close)

    def _overflow(self):
        """The client stopped reading and replies piled up: close with 1013, don't buffer more."""
        self.server.count("websocket_buffer_full")
        self._log.warn("WebSocket {path!r} from {client}: over {limit} bytes unsent; "
                       "reply refused, closing with 1013", path=self.path, client=self._client,
                       limit=self.server.websocket_max_buffer)
        self.close(1013)

    def close(self, code=1000):
        """Start the closing handshake with ``code`` (an invalid code becomes 1000)."""
        if not _sendable(code):
            self._log.warn("Invalid WebSocket close code {code!r}; using 1000", code=code)
            code = 1000
        if self.state == _OPEN:
            self.sendCloseFrame(code=code, isReply=False)

    def shutdown(self):
        """The server is stopping: close with 1001 (or refuse a pending handshake with 503)."""
        if self.state == _OPEN:
            self.close(1001)
        elif self.state == _CONNECTING and not self._accepted and self._handshake is not None:
            self._reject(503, "Service Unavailable")
        elif self.state != _CLOSED:
            self.dropConnection(abort=True)

    # -- frames from the client ---------------------------------------------

    def onMessage(self, payload, isBinary):
        if self._refusing:
            # Sent by the client before it saw our close: dropped, and not
            # numbered, so the disconnect's order follows the last delivered.
            return
        self._order += 1
        message = {"reply_channel": self.reply_channel, "path": self.path, "order": self._order}
        if isBinary:
            message["bytes"] = payload
        else:
            message["text"] = payload.decode("utf-8")
        self.server.layer.send("websocket.receive", message).addErrback(
            self._receive_not_sent, self._order)

    def _receive_not_sent(self, failure, order):
        self._refusing = True
        if order == self._order:
            self._order -= 1  # so the disconnect's order follows the last one delivered
        if failure.check(ChannelFull):
            self.server.warn_sometimes("receive-full", "websocket.receive is full; closing "
                                       "{path!r} with 1013", path=self.path)
            self.server.count("websocket_channel_full")
            self.close(1013)
        elif failure.check(LayerUnavailable):
            self.server.warn_sometimes(
                "receive-unavailable", "Channel layer unavailable ({error}); closing {path!r} "
                "with 1011", error=failure.getErrorMessage(), path=self.path)
            self.server.count("websocket_layer_unavailable")
            self.close(1011)
        else:
            self._log.failure("Could not send websocket.receive", failure)
            self.close(1011)

    def onClose(self, wasClean, code, reason):
        if self._output is not None:
            self._output.close()
            self._output = None
        for timer in (self._connect_timer, self._lifetime_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._connect_timer = self._lifetime_timer = None
        # autobahn leaves this one behind when the peer drops mid closing handshake
        if getattr(self, "closeHandshakeTimeoutCall", None) is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        if self.reply_channel is None:
            return
        server = self.server
        server.unregister(self.reply_channel)
        if not self._connect_sent:
            return
        self._connect_sent = False
        self._order += 1
        server.send_quietly("websocket.disconnect", {
            "reply_channel": self.reply_channel,
            "path": self.path,
            "code": code if code is not None else 1005,
            "order": self._order,
        })
        if server.access_log is not None and self._accepted:
            server.access_log.websocket("WSDISCONNECT", self._client, self.path,
                                        code if code is not None else 1005,
                                        server.reactor.seconds() - self._started)
