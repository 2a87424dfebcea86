"""
End to end: ``twistd -n chanserve`` serving the seed's first consumers,
driven by real clients over real sockets.

One server process is shared by the tests of ``SeedTests`` (started by the
first of them, stopped when the test run ends); every test uses its own
sockets and paths.
"""

import http.client
import json
import os
import socket
import time

import websocket
from twisted.internet import defer, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from .twistd_process import TwistdProcess

TIMEOUT = 10


def http_get(port, path, method="GET", body=None, headers=None):
    """``(status, headers dict, body bytes)`` of one request over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def ws_connect(port, path):
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=TIMEOUT)


class SeedTests(SynchronousTestCase):
    """The seed's hello world, echo and group chat, plus the worker's error behaviour."""

    def setUp(self):
        self.server = TwistdProcess.shared("tests.project.settings_seed")

    @property
    def port(self):
        return self.server.port

    def test_hello_world(self):
        """The seed's ``http_consumer`` answers through ``AsgiHandler.encode_response``."""
        status, headers, body = http_get(self.port, "/hello/there?x=1")
        self.assertEqual(status, 200, self.server.log())
        self.assertEqual(body, b"Hello world! You asked for /hello/there")
        self.assertIn("text/html", headers["content-type"])

    def test_django_view_layer_behind_defaults(self):
        """Paths no route takes fall through to Django's URLconf; unknown ones are Django 404s."""
        status, _, body = http_get(self.port, "/django/hello/")
        self.assertEqual((status, body), (200, b"hello from django"))
        status, _, _ = http_get(self.port, "/nowhere/")
        self.assertEqual(status, 404)

    def test_echo(self):
        """The seed's echo consumer sends each text frame back to its socket."""
        ws = ws_connect(self.port, "/echo/")
        try:
            for text in ("hello world", "ünïcode ✓", "x" * 5000):
                ws.send(text)
                self.assertEqual(ws.recv(), text)
        finally:
            ws.close()

    def test_async_consumer(self):
        """An ``async def`` consumer answers from the reactor."""
        ws = ws_connect(self.port, "/async/")
        try:
            ws.send("hi")
            self.assertEqual(ws.recv(), "async: hi")
        finally:
            ws.close()

    def chat_size(self):
        status, _, body = http_get(self.port, "/chat-size/")
        self.assertEqual(status, 200)
        return int(body)

    def wait_for_chat_size(self, expected):
        """Wait (up to TIMEOUT) until the chat group has ``expected`` members; assert it."""
        deadline = time.monotonic() + TIMEOUT
        size = self.chat_size()
        while size != expected and time.monotonic() < deadline:
            time.sleep(0.02)
            size = self.chat_size()
        self.assertEqual(size, expected)

    def test_group_chat(self):
        """Two clients of the seed's chat both receive what either sends."""
        self.wait_for_chat_size(0)
        first = ws_connect(self.port, "/chat/")
        second = ws_connect(self.port, "/chat/")
        try:
            # The connect consumer added both to the group before accepting.
            first.send("hello from one")
            self.assertEqual(first.recv(), "[user] hello from one")
            self.assertEqual(second.recv(), "[user] hello from one")
            second.send("and from two")
            self.assertEqual(first.recv(), "[user] and from two")
            self.assertEqual(second.recv(), "[user] and from two")
        finally:
            first.close()
            second.close()
        self.wait_for_chat_size(0)

    def test_group_discard_on_disconnect(self):
        """The seed's disconnect consumer takes a closed socket out of the group; the rest still chat."""
        self.wait_for_chat_size(0)
        leaving = ws_connect(self.port, "/chat/")
        staying = ws_connect(self.port, "/chat/")
        try:
            self.assertEqual(self.chat_size(), 2)
            leaving.close()
            # websocket.disconnect is consumed a moment after the close.
            self.wait_for_chat_size(1)
            staying.send("after leave")
            self.assertEqual(staying.recv(), "[user] after leave")
        finally:
            staying.close()
        self.wait_for_chat_size(0)

    def test_routing_kwargs(self):
        """Named groups of the route's path filter reach the consumer as kwargs."""
        ws = ws_connect(self.port, "/rooms/lobby/")
        try:
            self.assertEqual(ws.recv(), "room=lobby")
        finally:
            ws.close()

    def test_http_consumer_raises(self):
        """A consumer that raises gets the client a 500; the traceback is logged."""
        status, headers, body = http_get(self.port, "/errors/http/")
        self.assertEqual(status, 500)
        self.assertEqual(body, b"Internal Server Error")
        self.assertTrue(self.server.wait_for_log("http_raises: this consumer always fails"))
        # ...and the server goes on serving.
        self.assertEqual(http_get(self.port, "/hello/again")[0], 200)

    def test_websocket_consumer_raises(self):
        """An exception in a websocket.receive consumer closes the socket with 1011."""
        ws = ws_connect(self.port, "/errors/ws/")
        try:
            ws.send("boom")
            opcode, frame = ws.recv_data_frame(True)
            self.assertEqual(opcode, websocket.ABNF.OPCODE_CLOSE)
            self.assertEqual(int.from_bytes(frame.data[:2], "big"), 1011)
        finally:
            ws.close()

    def test_connect_denied(self):
        """``DenyConnection`` in the connect consumer rejects the handshake with 403."""
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            ws_connect(self.port, "/errors/deny/")
        self.assertEqual(caught.exception.status_code, 403)

    def test_connect_rejected_by_message(self):
        """``{"accept": False}`` from the connect consumer rejects with 403."""
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            ws_connect(self.port, "/errors/reject/")
        self.assertEqual(caught.exception.status_code, 403)

    def test_default_websocket_accepts(self):
        """A socket on a path no project route takes is accepted by the default routes."""
        ws = ws_connect(self.port, "/anything/")
        try:
            ws.ping(b"p")
            opcode, frame = ws.recv_data_frame(True)
            self.assertEqual((opcode, frame.data), (websocket.ABNF.OPCODE_PONG, b"p"))
        finally:
            ws.close()

    def test_raw_http_keepalive(self):
        """Two requests on one raw socket both get the seed's answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            request = b"GET /hello/raw HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall(request + request)
            data = b""
            while data.count(b"You asked for /hello/raw") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 2, data)

    def test_post_body_reaches_consumer(self):
        """A JSON POST is served (the default view layer reads its body)."""
        status, _, _ = http_get(self.port, "/hello/post", method="POST",
                                body=json.dumps({"a": 1}), headers={"Content-Type": "application/json"})
        self.assertEqual(status, 200)


class TwistedClientTests(TestCase):
    """The subprocess helper from a reactor-driven test, with Twisted's own HTTP client."""

    @defer.inlineCallbacks
    def test_agent_gets_hello_world(self):
        """``started()``/``stopped()`` wrap the process in Deferreds; ``Agent`` gets the seed's answer."""
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool, readBody

        proc = yield TwistdProcess("tests.project.settings_seed").started()
        pool = HTTPConnectionPool(reactor, persistent=False)
        try:
            agent = Agent(reactor, pool=pool)
            response = yield agent.request(b"GET", proc.url("/hello/agent").encode("ascii"))
            body = yield readBody(response)
        finally:
            yield pool.closeCachedConnections()
            status = yield proc.stopped()
        self.assertEqual((response.code, body), (200, b"Hello world! You asked for /hello/agent"))
        self.assertIn(status, (0, -15))


class StopTests(TestCase):
    """What a stop owes the sockets it closes."""

    @defer.inlineCallbacks
    def test_disconnect_consumers_run_at_stop(self):
        """Every socket open at SIGTERM gets its disconnect consumer run, even with more
        sockets than worker threads (the in-memory layer would lose them with the process)."""
        trace = os.path.join(self.mktemp() + "-goodbye")
        proc = yield TwistdProcess("tests.project.settings_seed", ["--threads", "1"],
                                   env={"CHANSERVE_TEST_GOODBYE": os.path.abspath(trace)}).started()
        self.addCleanup(proc.stop)

        def open_sockets():
            return [websocket.create_connection(proc.url("/goodbye/", scheme="ws"), timeout=10)
                    for _ in range(8)]

        def read_to_close(ws):
            try:
                while True:
                    ws.recv()  # answers the server's close frame
            except Exception:
                pass
            finally:
                ws.shutdown()
        sockets = yield threads.deferToThread(open_sockets)
        readers = [threads.deferToThread(read_to_close, ws) for ws in sockets]
        status = yield proc.stopped(timeout=30)
        yield defer.gatherResults(readers)
        self.assertIn(status, (0, -15))
        with open(trace) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 8, lines)
        self.assertTrue(all(line.startswith("/goodbye/ 100") for line in lines), lines)

