"""
Output flow control over real sockets: an ``InterfaceServer``, an in-memory
layer and ``view_consumer`` in worker threads, against clients that read
slowly or not at all.
"""

import hashlib
import socket
import struct
import threading
import time

from django.http import StreamingHttpResponse
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

import chanserve.handler as handler_module
from chanserve.channel import Message
from chanserve.handler import AsgiHandler, view_consumer
from chanserve.layers import InMemoryChannelLayer
from chanserve.server import InterfaceServer
from tests.server.support import client_frame, server_frames, upgrade_request

MIB = 1 << 20


def unsent(transport):
    """Bytes a Twisted TCP transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class Serving:
    """An InterfaceServer on 127.0.0.1 with consumers run from the test (on the reactor)."""

    def __init__(self, case, **options):
        self.layer = InMemoryChannelLayer(reactor=reactor, capacity=1000)
        self.server = InterfaceServer(self.layer, reactor, ["tcp:0:interface=127.0.0.1"],
                                      ping_interval=0, **options)
        self.case = case
        self.loops = []

    @defer.inlineCallbacks
    def start(self):
        yield self.server.startService()
        self.port = self.server.listening_ports[0].getHost().port
        self.case.addCleanup(self.server.stopService)

    def consume(self, channel, consumer):
        """Receive on ``channel`` for the rest of the test, calling ``consumer(message)``."""
        async def loop():
            while True:
                _, content = await self.layer.receive([channel])
                consumer(content)
        d = defer.Deferred.fromCoroutine(loop())
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        self.case.addCleanup(d.cancel)

    def max_unsent(self):
        """The most unsent output of any open connection now."""
        return max((unsent(c.transport) for c in self.server._open), default=0)


class SlowHTTPClient(threading.Thread):
    """GETs ``path`` with a small receive buffer, pausing ``pause`` seconds every ``step`` bytes."""

    def __init__(self, port, path, step=256 * 1024, pause=0.002):
        super().__init__(daemon=True)
        self.port, self.path, self.step, self.pause = port, path, step, pause
        self.head = b""
        self.digest = hashlib.sha256()
        self.received = 0
        self.error = None

    def run(self):
        try:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            sock.settimeout(60)
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"GET " + self.path + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(4096)
            self.head, _, rest = data.partition(b"\r\n\r\n")
            self.digest.update(rest)
            self.received = len(rest)
            since_pause = 0
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                self.digest.update(data)
                self.received += len(data)
                since_pause += len(data)
                if since_pause >= self.step:
                    since_pause = 0
                    time.sleep(self.pause)
            sock.close()
        except Exception as e:  # reported by the test
            self.error = e


class SlowReaderTests(unittest.TestCase):
    """A big streaming response to a slow reader keeps the server's buffers small."""

    size = 64 * MIB

    def setUp(self):
        previous = handler_module._handler
        self.addCleanup(setattr, handler_module, "_handler", previous)
        block = bytes(range(256)) * 4096  # 1 MiB
        self.expected = hashlib.sha256()
        for i in range(self.size // MIB):
            self.expected.update(struct.pack("!I", i) + block[4:])
        self.closed = []

        def replies(message):
            def parts():
                try:
                    for i in range(self.size // MIB):
                        yield struct.pack("!I", i) + block[4:]
                finally:
                    self.closed.append(True)
            response = StreamingHttpResponse(parts(), content_type="application/octet-stream")
            response["Content-Length"] = str(self.size)
            return AsgiHandler.encode_response(response)

        handler_module.set_view_handler(replies)

    @defer.inlineCallbacks
    def test_bounded_buffer(self):
        """64 MiB read slowly: the connection never holds 16 MiB unsent; the body is intact."""
        serving = Serving(self)
        yield serving.start()
        consumers = []
        serving.consume("http.request", lambda content: consumers.append(threads.deferToThread(
            view_consumer, Message(content, "http.request", serving.layer))))
        peak = [0]

        def sample():
            peak[0] = max(peak[0], serving.max_unsent())
        sampler = task.LoopingCall(sample)
        sampler.start(0.005)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        client = SlowHTTPClient(serving.port, b"/big/")
        client.start()
        yield threads.deferToThread(client.join, 120)
        yield defer.gatherResults(consumers)
        self.assertIsNone(client.error)
        self.assertTrue(client.head.startswith(b"HTTP/1.1 200 OK\r\n"), client.head)
        self.assertEqual(client.received, self.size)
        self.assertEqual(client.digest.hexdigest(), self.expected.hexdigest())
        self.assertEqual(self.closed, [True])
        self.assertLess(peak[0], 16 * MIB)
        self.assertGreater(peak[0], 0)


def websocket_client(port):
    """A connected, upgraded raw WebSocket client socket (small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    assert data.startswith(b"HTTP/1.1 101 "), data
    return sock


def read_frames(sock, until_opcode):
    """Server frames until one with ``until_opcode`` (or the end of the stream)."""
    data, frames = b"", []
    while not frames or frames[-1][0] != until_opcode:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        more, data = server_frames(data)
        frames.extend(more)
    return frames


class WebSocketBufferTests(unittest.TestCase):
    """A WebSocket client that stops reading is closed with 1013, not buffered without bound."""

    @defer.inlineCallbacks
    def test_stalled_reader_closed(self):
        """Replies pile up for a socket that reads nothing: 1013 past the bound; others still served."""
        serving = Serving(self, websocket_max_buffer=MIB)
        yield serving.start()
        layer = serving.layer
        connects = []

        def accept(content):
            connects.append(content["reply_channel"])
            layer.send(content["reply_channel"], {"accept": True})
        serving.consume("websocket.connect", accept)
        serving.consume("websocket.receive", lambda content: layer.send(
            content["reply_channel"], {"text": content["text"]}))

        stalled = yield threads.deferToThread(websocket_client, serving.port)
        self.addCleanup(stalled.close)
        payload = b"x" * (64 * 1024)
        sent = peak = 0
        statistics = serving.server.statistics
        while not statistics["websocket_buffer_full"] and sent < 2000:
            yield layer.send(connects[0], {"bytes": struct.pack("!I", sent) + payload})
            sent += 1
            peak = max(peak, serving.max_unsent())
            if sent % 4 == 0:
                yield task.deferLater(reactor, 0.001, lambda: None)
        self.assertEqual(statistics["websocket_buffer_full"], 1)
        self.assertLess(peak, 2 * MIB)

        frames = yield threads.deferToThread(read_frames, stalled, 8)
        data = [payload for opcode, payload in frames if opcode == 2]
        self.assertEqual(frames[-1][0], 8)
        self.assertEqual(struct.unpack("!H", frames[-1][1][:2])[0], 1013)
        self.assertEqual([struct.unpack("!I", d[:4])[0] for d in data], list(range(len(data))))
        self.assertLess(len(data), sent)

        def served():
            sock = websocket_client(serving.port)
            try:
                sock.sendall(client_frame(1, b"still here?"))
                return read_frames(sock, 1)
            finally:
                sock.close()
        frames = yield threads.deferToThread(served)
        self.assertEqual(frames, [(1, b"still here?")])
