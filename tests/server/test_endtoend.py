"""The interface server on real sockets, with a real WebSocket client and raw sockets."""

import http.client
import os
import shutil
import socket
import ssl
import tempfile

import twisted.test

import websocket
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from chanserve.layers import InMemoryChannelLayer
from chanserve.server import InterfaceServer

_CHANNELS = ["http.request", "websocket.connect", "websocket.receive", "websocket.disconnect"]


class EchoServerMixin:
    """An InterfaceServer on 127.0.0.1:0 and a tiny consumer loop answering its messages."""

    options = {}
    endpoint = "tcp:0:interface=127.0.0.1"

    @defer.inlineCallbacks
    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=reactor)
        self.server = InterfaceServer(self.layer, reactor, [self.endpoint],
                                      ping_interval=0, **self.options)
        self.server.startService()
        ports = yield self.server.listening
        self.port = getattr(ports[0].getHost(), "port", None)
        self.seen = []
        self.disconnected = defer.Deferred()
        self.consumer = defer.Deferred.fromCoroutine(self._consume())
        self.consumer.addErrback(lambda f: f.trap(defer.CancelledError))
        self.addCleanup(self._stop)

    @defer.inlineCallbacks
    def _stop(self):
        self.consumer.cancel()
        yield self.server.stopService()

    async def _consume(self):
        layer = self.layer
        while True:
            channel, message = await layer.receive(_CHANNELS)
            self.seen.append((channel, message))
            reply = message.get("reply_channel")
            if channel == "http.request":
                body = message["body"]
                if "body_channel" in message:
                    while True:
                        _, chunk = await layer.receive([message["body_channel"]])
                        body += chunk["content"]
                        if not chunk["more_content"]:
                            break
                if message["path"] == "/slow":
                    await task.deferLater(reactor, 0.2, lambda: None)
                if message["path"] == "/stream":
                    await layer.send(reply, {"status": 200, "headers": [], "content": b"one,",
                                             "more_content": True})
                    await layer.send(reply, {"content": b"two", "more_content": False})
                else:
                    await layer.send(reply, {
                        "status": 200, "headers": [[b"content-type", b"text/plain"]],
                        "content": b"%s %d" % (message["path"].encode(), len(body)),
                        "more_content": False})
            elif channel == "websocket.connect":
                offered = [v for k, v in message["headers"] if k == b"sec-websocket-protocol"]
                answer = {"accept": message["path"] != "/reject"}
                if offered:
                    answer["subprotocol"] = offered[0].split(b",")[0].decode()
                await layer.send(reply, answer)
            elif channel == "websocket.receive":
                await layer.send(reply, {"text": message.get("text"), "bytes": message.get("bytes")})
            elif channel == "websocket.disconnect" and not self.disconnected.called:
                self.disconnected.callback(message)

    def raw(self, data, read_until_close=True):
        """Send bytes on a fresh socket in a thread; fire with everything read back."""
        def talk():
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(data)
                if not read_until_close:
                    s.shutdown(socket.SHUT_WR)
                out = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out
                    out += chunk
        return threads.deferToThread(talk)

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"


class HTTPEndToEndTests(EchoServerMixin, TestCase):
    """HTTP over TCP."""

    options = {"body_chunk_size": 1 << 14, "max_request_body": 1 << 21}

    @defer.inlineCallbacks
    def test_keep_alive(self):
        """Two requests on one connection with http.client, and a streamed chunked response."""
        def fetch():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/first")
                one = conn.getresponse().read()
                conn.request("GET", "/stream")
                response = conn.getresponse()
                return one, response.getheader("transfer-encoding"), response.read()
            finally:
                conn.close()
        one, encoding, two = yield threads.deferToThread(fetch)
        self.assertEqual((one, encoding, two), (b"/first 0", "chunked", b"one,two"))

    @defer.inlineCallbacks
    def test_large_upload(self):
        """A 1 MiB body streams through ``body_channel`` and arrives whole."""
        def upload():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("POST", "/up", body=b"z" * (1 << 20))
                return conn.getresponse().read()
            finally:
                conn.close()
        self.assertEqual((yield threads.deferToThread(upload)), b"/up 1048576")
        request = [m for c, m in self.seen if c == "http.request"][0]
        self.assertIn("body_channel", request)

    @defer.inlineCallbacks
    def test_malformed_then_served(self):
        """Garbage gets a 400 and a closed socket; the next client is served."""
        out = yield self.raw(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out)
        out = yield self.raw(b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK"), out)
        self.assertTrue(out.endswith(b"/ok 0"))

    @defer.inlineCallbacks
    def test_too_large_then_served(self):
        """A body over the limit gets 413; the next client is served."""
        out = yield self.raw(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413 "), out)
        out = yield self.raw(b"GET /ok HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK"), out)

    @defer.inlineCallbacks
    def test_fin_before_response_is_gone(self):
        """
        A client closing its sending side (a FIN) before its response starts
        is taken as gone, as Daphne does: the connection closes at once and
        the late reply is dropped.
        """
        out = yield self.raw(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", read_until_close=False)
        self.assertEqual(out, b"")

    @defer.inlineCallbacks
    def test_client_gone(self):
        """A response that started before the client's FIN is written to the end (HTTP/1.0 clients)."""
        out = yield self.raw(b"GET /half HTTP/1.0\r\n\r\n", read_until_close=False)
        self.assertTrue(out.endswith(b"/half 0"))


class WebSocketEndToEndTests(EchoServerMixin, TestCase):
    """WebSocket over TCP with the websocket-client library."""

    options = {"websocket_max_message": 1000}

    @defer.inlineCallbacks
    def test_echo(self):
        """Text and binary echo, a clean close, and ``websocket.disconnect`` with its code."""
        def chat():
            ws = websocket.create_connection(self.url("/chat/?x=1"), timeout=5,
                                             subprotocols=["v1"])
            try:
                ws.send("h\u00e9llo")
                text = ws.recv()
                ws.send_binary(b"\x00\x01")
                data = ws.recv()
                return text, data, ws.subprotocol
            finally:
                ws.close(status=4000)
        text, data, subprotocol = yield threads.deferToThread(chat)
        self.assertEqual((text, data, subprotocol), ("h\u00e9llo", b"\x00\x01", "v1"))
        disconnect = yield self.disconnected
        self.assertEqual((disconnect["code"], disconnect["order"]), (4000, 3))

    @defer.inlineCallbacks
    def test_reject(self):
        """A rejected handshake is a 403 to the client."""
        def connect():
            try:
                websocket.create_connection(self.url("/reject"), timeout=5)
            except websocket.WebSocketBadStatusException as e:
                return e.status_code
        self.assertEqual((yield threads.deferToThread(connect)), 403)

    @defer.inlineCallbacks
    def test_null_origin_reaches_consumer(self):
        """``Origin: null`` (a file:// page, a sandboxed frame) is the application's to judge."""
        def connect():
            ws = websocket.create_connection(self.url("/"), timeout=5, origin="null")
            try:
                ws.send("from a file")
                return ws.recv()
            finally:
                ws.close()
        self.assertEqual((yield threads.deferToThread(connect)), "from a file")
        [connect_message] = [m for c, m in self.seen if c == "websocket.connect"]
        self.assertIn([b"origin", b"null"], [list(h) for h in connect_message["headers"]])

    @defer.inlineCallbacks
    def test_limits_then_served(self):
        """Too big a message gets close 1009, invalid UTF-8 close 1007; then echo still works."""
        def offend(frame):
            ws = websocket.create_connection(self.url("/"), timeout=5)
            try:
                ws.send_frame(frame)
                opcode, payload = ws.recv_data(control_frame=True)
                return opcode, int.from_bytes(payload[:2], "big")
            finally:
                ws.shutdown()
        too_big = websocket.ABNF.create_frame(b"x" * 1001, websocket.ABNF.OPCODE_BINARY)
        self.assertEqual((yield threads.deferToThread(offend, too_big)), (8, 1009))
        bad_text = websocket.ABNF.create_frame(b"\xff\xfe", websocket.ABNF.OPCODE_TEXT)
        self.assertEqual((yield threads.deferToThread(offend, bad_text)), (8, 1007))

        def echo():
            ws = websocket.create_connection(self.url("/"), timeout=5)
            try:
                ws.send("fine")
                return ws.recv()
            finally:
                ws.close()
        self.assertEqual((yield threads.deferToThread(echo)), "fine")



class TLSEndToEndTests(EchoServerMixin, TestCase):
    """An ``ssl:`` endpoint: the scheme is https / wss."""

    def setUp(self):
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        self.endpoint = f"ssl:0:interface=127.0.0.1:privateKey={pem}"
        return super().setUp()

    @defer.inlineCallbacks
    def test_https_and_wss(self):
        """
        A request over TLS says ``https``; a WebSocket over TLS says ``wss``.
        The clients offer ALPN as browsers and curl do (a server that
        offered no protocol refused their handshakes).
        """
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])

        def fetch():
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context)
            try:
                conn.request("GET", "/secure")
                body = conn.getresponse().read()
            finally:
                conn.close()
            ws = websocket.create_connection(f"wss://127.0.0.1:{self.port}/s",
                                             sslopt={"context": context}, timeout=5)
            try:
                ws.send("x")
                return body, ws.recv()
            finally:
                ws.close()
        body, echoed = yield threads.deferToThread(fetch)
        self.assertEqual((body, echoed), (b"/secure 0", "x"))
        schemes = {c: m["scheme"] for c, m in self.seen if "scheme" in m}
        self.assertEqual(schemes, {"http.request": "https", "websocket.connect": "wss"})


class UnixEndToEndTests(EchoServerMixin, TestCase):
    """A ``unix:`` endpoint: no client address (unless a proxy in front says it)."""

    options = {"proxy_headers": True}

    def setUp(self):
        # Not under trial's directory: a socket path has a 108-byte limit that a
        # deep checkout (CI clones into long paths) exceeds.
        directory = tempfile.mkdtemp(prefix="chanserve-unix-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "s")
        self.endpoint = f"unix:{self.path}"
        return super().setUp()

    def fetch(self, request):
        """Send ``request`` over the unix socket in a thread; fire with everything read back."""
        def talk():
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.path)
                s.sendall(request)
                out = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out
                    out += chunk
        return threads.deferToThread(talk)

    @defer.inlineCallbacks
    def test_request(self):
        """A request over a unix socket is served, with ``client`` None."""
        out = yield self.fetch(b"GET /unix HTTP/1.0\r\n\r\n")
        self.assertTrue(out.endswith(b"/unix 0"), out)
        self.assertIsNone(self.seen[0][1]["client"])

    @defer.inlineCallbacks
    def test_proxy_headers(self):
        """With ``--proxy-headers``, nginx's X-Forwarded-* over the unix socket are believed."""
        yield self.fetch(b"GET /p HTTP/1.0\r\nX-Forwarded-For: 203.0.113.9\r\n"
                         b"X-Forwarded-Proto: https\r\n\r\n")
        [message] = [m for c, m in self.seen if c == "http.request"]
        self.assertEqual((message["client"], message["scheme"]), (["203.0.113.9", 0], "https"))


class ListenFailureTests(TestCase):
    """``listening`` fails when an endpoint cannot listen, and the others are closed."""

    @defer.inlineCallbacks
    def test_port_in_use(self):
        """A port in use: ``listening`` fails with CannotListenError; nothing stays open."""
        from twisted.internet.error import CannotListenError
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            busy = taken.getsockname()[1]
            server = InterfaceServer(InMemoryChannelLayer(reactor=reactor), reactor,
                                     ["tcp:0:interface=127.0.0.1", f"tcp:{busy}:interface=127.0.0.1"],
                                     ping_interval=0)
            server.startService()
            yield self.assertFailure(server.listening, CannotListenError)
            self.assertEqual(server.listening_ports, [])
            yield server.stopService()
