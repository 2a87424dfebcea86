"""The interface server service: listeners, the reply loop and the connection table."""

import secrets
import time

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._occasional import OccasionalWarnings
from ..exceptions import LayerUnavailable
from ._accesslog import AccessLog
from ._flow import ACK_CLOSED
from ._http import HTTPProtocol
from ._proxy import ProxyHeaders
from ._websocket import make_websocket_factory


@implementer(IProtocolNegotiationFactory)
class _ConnectionFactory(protocol.Factory):
    """
    Builds an L{HTTPProtocol} for every accepted connection.

    Over TLS it says it speaks HTTP/1.1 (ALPN): a client offering ALPN (every
    browser, curl) is refused the handshake by a server that offers nothing.
    """

    noisy = False

    def acceptableProtocols(self):
        return [b"http/1.1"]

    def __init__(self, server):
        self.server = server

    def buildProtocol(self, addr):
        return HTTPProtocol(self.server)


class InterfaceServer(service.Service):
    """
    Serve HTTP and WebSocket on ``endpoints``, speaking to the channel ``layer``.

    Requests and frames go to the layer as ``http.request`` and
    ``websocket.*`` messages; replies come back on per-connection reply
    channels under one process prefix (``chanserve.<token>!``) read by a
    single receive loop, and are dispatched through a dict.

    @param layer: an L{IChannelLayer}.
    @param reactor: schedules every timeout and listens on the endpoints.
    @param endpoints: Twisted server endpoint description strings.

    The keyword arguments are the contract's options (seconds and bytes; a
    0 disables a timeout or a limit), plus tuning knobs: C{idle_timeout}
    (keep-alive connection with no request), C{header_timeout} (a request
    head must arrive completely within it: slowloris), C{body_timeout}
    (request body stalled), C{shutdown_timeout} (how long C{stopService}
    lets responses finish), C{max_header_size}/C{max_headers} (431 above),
    C{body_chunk_size} (size of C{http.request.body} chunks),
    C{websocket_max_buffer} (a reply to a WebSocket with more unsent output
    than this closes it with 1013 instead of buffering more),
    C{websocket_protocols} (subprotocols selected, in the client's order of
    preference, when the consumer's accept names none).

    Response messages may carry C{ack_channel}: see L{chanserve.server._flow}.
    """

    name = "interface-server"
    _log = Logger()

    def __init__(self, layer, reactor, endpoints, *, access_log=None, proxy_headers=False,
                 trusted_proxies=("127.0.0.1", "::1"), root_path="", http_timeout=120.0,
                 websocket_timeout=86400.0, websocket_connect_timeout=20.0,
                 ping_interval=20.0, ping_timeout=30.0, max_request_body=1 << 30,
                 websocket_max_message=1 << 20, idle_timeout=20.0, header_timeout=10.0,
                 body_timeout=60.0, shutdown_timeout=10.0, max_header_size=1 << 16,
                 max_headers=100, body_chunk_size=1 << 16, websocket_max_buffer=16 << 20,
                 websocket_protocols=()):
        self.layer = layer
        self.reactor = reactor
        self._receivable = getattr(layer, "receivable", None)  # layers predating it lack it
        self._warnings = OccasionalWarnings(self._log, reactor)
        self.endpoints = list(endpoints)
        self.access_log_path = access_log
        self.access_log = None
        self.proxy = ProxyHeaders(trusted_proxies) if proxy_headers else None
        self.root_path = root_path.rstrip("/") if root_path else ""
        self.http_timeout = http_timeout
        self.websocket_timeout = websocket_timeout
        self.websocket_connect_timeout = websocket_connect_timeout
        self.max_request_body = max_request_body
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.shutdown_timeout = shutdown_timeout
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.body_chunk_size = body_chunk_size
        self.websocket_max_buffer = websocket_max_buffer
        self.websocket_protocols = tuple(websocket_protocols)
        # Stop reading a connection once this much unparsed input waits.
        self.max_buffer = max(max_header_size, body_chunk_size) * 2
        self.websocket_factory = make_websocket_factory(
            reactor, websocket_max_message, ping_interval, ping_timeout)
        self.prefix = f"chanserve.{secrets.token_hex(8)}!"
        self.statistics = {"replies_dropped": 0, "http_channel_full": 0,
                           "websocket_channel_full": 0, "http_layer_unavailable": 0,
                           "websocket_layer_unavailable": 0, "websocket_buffer_full": 0}
        self.stopping = False
        self.listening = None
        self.listening_ports = []
        self._connections = {}     # reply channel -> HTTPProtocol / WebSocketProtocol
        self._open = set()          # every open HTTPProtocol (upgraded ones too)
        self._prefixes = [self.prefix]
        self._receiving = None
        self._reading = False
        self._retry = None
        self._retry_delay = 0.0
        self._prepared = None
        self._date_second = None
        self._date = b""
        self._drained = None

    # -- service -------------------------------------------------------------

    def startService(self):
        super().startService()
        self.stopping = False
        if self.access_log_path is not None:
            self.access_log = AccessLog(self.access_log_path, self.reactor)
        self._reading = True
        self._pump()
        factory = _ConnectionFactory(self)
        listens = [endpoints.serverFromString(self.reactor, description).listen(factory)
                   for description in self.endpoints]
        self.listening = defer.DeferredList(listens, consumeErrors=True)
        self.listening.addCallback(self._listened)
        return self.listening

    def _listened(self, results):
        ports = [port for ok, port in results if ok]
        failures = [failure for ok, failure in results if not ok]
        if failures:
            # Reported by whoever watches ``listening`` (the chanserve service), once.
            for port in ports:
                port.stopListening()
            return failures[0]
        self.listening_ports = ports
        for port in ports:
            self._log.info("Interface server listening on {address}", address=port.getHost())
        return ports

    def stopService(self):
        """Stop listening, let responses finish (up to C{shutdown_timeout}), close WebSockets with 1001."""
        super().stopService()
        self.stopping = True
        ports, self.listening_ports = self.listening_ports, []
        stopped = [defer.maybeDeferred(port.stopListening) for port in ports]
        for connection in list(self._open):
            connection.pause_for_shutdown()
        self._drained = defer.Deferred()
        if not self._open:
            self._drained.callback(None)
        deadline = None
        if self.shutdown_timeout:
            deadline = self.reactor.callLater(self.shutdown_timeout, self._abort_all)
        d = defer.gatherResults(stopped + [self._drained], consumeErrors=True)

        def done(result):
            if deadline is not None and deadline.active():
                deadline.cancel()
            self._stop_reading()
            self._warnings.flush()
            if self.access_log is not None:
                self.access_log.close()
                self.access_log = None
            return None
        return d.addBoth(done)

    def _abort_all(self):
        if self._open:
            self._log.warn("Aborting {n} connection(s) still open at the shutdown deadline",
                           n=len(self._open))
        for connection in list(self._open):
            connection.transport.abortConnection()

    # -- connections ---------------------------------------------------------

    def connection_made(self, connection):
        self._open.add(connection)
        if self.stopping:
            connection.pause_for_shutdown()

    def connection_lost(self, connection):
        self._open.discard(connection)
        if not self._open and self._drained is not None and not self._drained.called:
            self._drained.callback(None)

    def new_reply_channel(self):
        """A fresh reply channel name under this process's prefix (96 random bits)."""
        return self.prefix + secrets.token_urlsafe(12)

    def new_body_channel(self):
        """A fresh single-reader channel name for a request body."""
        return "http.request.body?" + secrets.token_urlsafe(12)

    def register(self, channel, connection):
        self._connections[channel] = connection

    def unregister(self, channel):
        self._connections.pop(channel, None)

    def count(self, name):
        self.statistics[name] = self.statistics.get(name, 0) + 1

    def warn_sometimes(self, kind, format, **kwargs):
        """
        Log a warning of ``kind`` at most once every 10 seconds; those left
        out are summarised when the 10 seconds end (``OccasionalWarnings``):
        for what repeats per request while the layer is full or down.
        """
        self._warnings.warn(kind, format, **kwargs)

    def replies_unreceivable(self):
        """
        None while replies to this server can arrive, else a ``Failure`` of
        ``LayerUnavailable`` saying why. With sharded Redis its reply
        channels live on one server; while that one is down, requests are
        refused at once (503) instead of being run by a worker whose answer
        could never come back.
        """
        receivable = self._receivable
        if receivable is None or receivable(self.prefix):
            return None
        return Failure(LayerUnavailable(
            f"replies to this server ({self.prefix}) cannot be received now"))

    def send_quietly(self, channel, message):
        """
        Send a notification (``websocket.disconnect``, ``http.disconnect``, an
        acknowledgement) that nobody waits for; one that can't be sent is
        counted in ``notifications_dropped`` and logged (at most every few
        seconds per kind): a lost ``websocket.disconnect`` leaves its
        socket in its groups until they notice.
        """
        def failed(failure):
            self.count("notifications_dropped")
            name = channel.partition("?")[0].partition("!")[0]
            self.warn_sometimes("dropped:" + name, "Could not send {name}: {error}",
                                name=name, error=failure.getErrorMessage())
        self.layer.send(channel, message).addErrback(failed)

    def date_header(self):
        """The ``Date:`` header line for now (formatted once a second)."""
        now = int(self.reactor.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = time.strftime("Date: %a, %d %b %Y %H:%M:%S GMT\r\n",
                                       time.gmtime(now)).encode("ascii")
        return self._date

    def prepared(self, message, payload, binary):
        """
        An autobahn prepared frame for ``payload``, reused while the same message repeats.

        A group send hands every member on this process the very same
        message dict, so a broadcast is framed once for all its sockets.
        """
        cached = self._prepared
        if cached is not None and cached[0] is message and cached[1] is payload:
            return cached[2]
        frame = self.websocket_factory.prepareMessage(
            payload if binary else payload.encode("utf-8"), binary)
        self._prepared = (message, payload, frame)
        return frame

    # -- the reply loop ------------------------------------------------------

    def _pump(self):
        """Receive replies until one has to be waited for (no recursion, no polling)."""
        layer, prefixes = self.layer, self._prefixes
        while self._reading:
            box = []
            d = layer.receive(prefixes)
            d.addBoth(box.append)
            if not box:
                self._receiving = d
                d.addCallback(self._resume, box)
                return
            self._handle(box[0])

    def _resume(self, _, box):
        self._receiving = None
        self._handle(box[0])
        self._pump()

    def _handle(self, result):
        if isinstance(result, Failure):
            if result.check(defer.CancelledError) or not self._reading:
                return
            self._retry_delay = min(max(self._retry_delay * 2, 0.1), 5.0)
            self._log.failure("Receiving replies failed; retrying in {delay}s", result,
                              delay=self._retry_delay)
            self._reading = False
            self._retry = self.reactor.callLater(self._retry_delay, self._restart)
            return
        self._retry_delay = 0.0
        channel, message = result
        connection = self._connections.get(channel)
        if connection is None:
            self.statistics["replies_dropped"] += 1
            self.warn_sometimes("reply-dropped", "Reply on {channel!r} dropped: its connection "
                                "is gone (replies_dropped)", channel=channel)
            ack = message.get("ack_channel") if isinstance(message, dict) else None
            if ack is not None:
                # The connection is gone: tell the sender to stop.
                self.send_quietly(ack, ACK_CLOSED)
            return
        try:
            connection.reply(message)
        except Exception:
            self._log.failure("Error handling a reply on {channel}", channel=channel)

    def _restart(self):
        self._retry = None
        if self.running or self._open:
            self._reading = True
            self._pump()

    def _stop_reading(self):
        self._reading = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        receiving, self._receiving = self._receiving, None
        if receiving is not None:
            receiving.cancel()
