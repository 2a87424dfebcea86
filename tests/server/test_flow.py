"""Output flow control in the interface server, in memory: acknowledgements and WebSocket bounds."""

import struct

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from chanserve.exceptions import LayerUnavailable

from .support import Harness, client_frame, server_frames, upgrade_request

GET = b"GET /big HTTP/1.1\r\nHost: example.com\r\n\r\n"
START = {"status": 200, "headers": [[b"content-type", b"application/octet-stream"]],
         "content": b"", "more_content": True}


class BufferedTransport(StringTransportWithDisconnection):
    """
    A string transport that treats everything written and not yet
    L{drain}ed as unsent output, pausing its streaming producer above
    C{bufferSize} and resuming it once drained, like Twisted's TCP transport.
    """

    bufferSize = 1000

    def write(self, data):
        super().write(data)
        self._check()

    def writeSequence(self, data):
        super().writeSequence(data)
        self._check()

    def _check(self):
        if (self.producer is not None and self.streaming
                and len(self.io.getvalue()) > self.bufferSize):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self):
        """The client read everything: empty the buffer, resume a paused producer."""
        data = self.value()
        self.clear()
        if self.producer is not None and getattr(self, "producerPaused", False):
            self.producerPaused = False
            self.producer.resumeProducing()
        return data


class FlowTestCase(SynchronousTestCase):
    """A harness whose connections have L{BufferedTransport}s."""

    options = {}

    def setUp(self):
        self.h = Harness(**self.options)
        self.addCleanup(self.h.stop)

    def connect(self):
        protocol = self.h.factory.buildProtocol(None)
        transport = BufferedTransport(
            peerAddress=IPv4Address("TCP", "10.0.0.7", 50000),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def started(self, ack="http.response.ack?a"):
        """A request answered with a streaming start carrying ``ack``; (transport, request)."""
        protocol, transport = self.connect()
        protocol.dataReceived(GET)
        request = self.h.next("http.request")
        self.h.reply(request, dict(START, ack_channel=ack))
        return transport, request


class HTTPAckTests(FlowTestCase):
    """Reply messages with ``ack_channel`` are acknowledged once written and drained."""

    def test_request_says_acks(self):
        """``http.request`` tells the consumer that replies may ask for acknowledgements."""
        protocol, _ = self.connect()
        protocol.dataReceived(GET)
        self.assertIs(self.h.next("http.request")["response_acks"], True)

    def test_ack_at_once_when_buffer_low(self):
        """With little unsent output, the acknowledgement is sent right after the write."""
        transport, request = self.started()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.h.next("http.response.ack?a"), {"ok": True})
        self.assertIsNotNone(transport.producer)
        self.h.reply(request, {"content": b"x" * 10, "more_content": True,
                               "ack_channel": "http.response.ack?a"})
        self.assertEqual(self.h.next("http.response.ack?a"), {"ok": True})

    def test_ack_waits_for_drain(self):
        """Above the high-water mark, the acknowledgement waits until the transport resumes us."""
        transport, request = self.started()
        self.h.next("http.response.ack?a")
        self.h.reply(request, {"content": b"x" * 5000, "more_content": True,
                               "ack_channel": "http.response.ack?a"})
        self.h.reply(request, {"content": b"y" * 5000, "more_content": True,
                               "ack_channel": "http.response.ack?a"})
        self.assertIsNone(self.h.next("http.response.ack?a"))
        data = transport.drain()
        self.assertIn(b"x" * 5000, data)
        self.assertIn(b"y" * 5000, data)
        self.assertEqual(self.h.next("http.response.ack?a"), {"ok": True})
        self.assertEqual(self.h.next("http.response.ack?a"), {"ok": True})
        self.assertIsNone(self.h.next("http.response.ack?a"))

    def test_closed_when_connection_drops(self):
        """A connection lost with an acknowledgement pending answers it ``closed``."""
        transport, request = self.started()
        self.h.next("http.response.ack?a")
        self.h.reply(request, {"content": b"x" * 5000, "more_content": True,
                               "ack_channel": "http.response.ack?a"})
        self.assertIsNone(self.h.next("http.response.ack?a"))
        transport.loseConnection()
        self.assertEqual(self.h.next("http.response.ack?a"), {"closed": True})
        self.assertEqual(self.h.next("http.disconnect")["reply_channel"],
                         request["reply_channel"])

    def test_closed_after_client_left(self):
        """A reply with ``ack_channel`` for a connection already gone is answered ``closed``."""
        transport, request = self.started()
        self.h.next("http.response.ack?a")
        transport.loseConnection()
        self.h.reply(request, {"content": b"x", "more_content": True,
                               "ack_channel": "http.response.ack?a"})
        self.assertEqual(self.h.next("http.response.ack?a"), {"closed": True})
        self.assertEqual(self.h.server.statistics["replies_dropped"], 1)

    def test_last_message_unregisters(self):
        """The end of the response unregisters the producer, so keep-alive and close work."""
        transport, request = self.started()
        self.h.reply(request, {"content": b"", "more_content": False})
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.value().endswith(b"0\r\n\r\n"))
        self.assertTrue(transport.connected)

    def test_last_message_ack_waits_then_unregisters(self):
        """A last message with ``ack_channel`` above the mark: acknowledged on drain, then unregistered."""
        transport, request = self.started()
        self.h.next("http.response.ack?a")
        self.h.reply(request, {"content": b"z" * 5000, "more_content": False,
                               "ack_channel": "http.response.ack?a"})
        self.assertIsNotNone(transport.producer)
        self.assertIsNone(self.h.next("http.response.ack?a"))
        transport.drain()
        self.assertEqual(self.h.next("http.response.ack?a"), {"ok": True})
        self.assertIsNone(transport.producer)

    def test_no_ack_no_producer(self):
        """Replies without ``ack_channel`` (the short-response hot path) never register a producer."""
        protocol, transport = self.connect()
        protocol.dataReceived(GET)
        request = self.h.next("http.request")
        self.h.reply(request, START)
        self.h.reply(request, {"content": b"x" * 5000, "more_content": True})
        self.assertIsNone(transport.producer)
        self.h.reply(request, {"content": b"", "more_content": False})
        self.assertIsNone(transport.producer)


class PipelineFlowTests(FlowTestCase):
    """Pipelined requests wait until the client has read the response before them."""

    def test_next_request_waits_for_reader(self):
        """
        A client that pipelines requests and reads nothing gets one response
        buffered, not one per request: the next request is dispatched only
        once the previous response has drained.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(GET * 3)
        first = self.h.next("http.request")
        self.h.reply(first, {"status": 200, "headers": [], "content": b"x" * 5000,
                             "more_content": False})
        self.assertIsNone(self.h.next("http.request"))
        # More pipelined bytes arriving meanwhile don't start it either.
        protocol.dataReceived(GET)
        self.assertIsNone(self.h.next("http.request"))
        transport.drain()
        second = self.h.next("http.request")
        self.assertIsNotNone(second)
        self.h.reply(second, {"status": 200, "headers": [], "content": b"ok",
                              "more_content": False})
        # A small response leaves the output low: the third goes at once.
        self.assertIsNotNone(self.h.next("http.request"))

    def test_connection_lost_while_waiting(self):
        """A client leaving while its pipelined request waits: nothing more is dispatched."""
        protocol, transport = self.connect()
        protocol.dataReceived(GET * 2)
        self.h.reply(self.h.next("http.request"), {
            "status": 200, "headers": [], "content": b"x" * 5000, "more_content": False})
        transport.loseConnection()
        self.assertIsNone(self.h.next("http.request"))
        self.assertIsNone(self.h.next("http.disconnect"))

    def test_stop_while_waiting_closes(self):
        """A server stopping while a pipelined request waits closes the connection after the drain."""
        protocol, transport = self.connect()
        protocol.dataReceived(GET * 2)
        self.h.reply(self.h.next("http.request"), {
            "status": 200, "headers": [], "content": b"x" * 5000, "more_content": False})
        self.h.server.stopService()
        transport.drain()
        self.assertIsNone(self.h.next("http.request"))
        self.assertFalse(transport.connected)


class LayerUnavailableTests(FlowTestCase):
    """A layer that is down answers 503 with a one-line warning and a counter."""

    def setUp(self):
        super().setUp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.down = True
        send = self.h.layer.send

        def flaky_send(channel, message):
            if self.down:
                return defer.fail(LayerUnavailable("redis is down"))
            return send(channel, message)
        self.h.layer.send = flaky_send

    def warnings(self):
        return [e for e in self.events if e.get("log_level") is not None
                and e["log_level"].name in ("warn", "error", "critical")
                and e.get("log_namespace", "").startswith("chanserve.")]

    def test_http(self):
        """``http.request`` not sent: 503, one warning without a traceback, counted."""
        protocol, transport = self.connect()
        protocol.dataReceived(GET)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        [warning] = self.warnings()
        self.assertNotIn("log_failure", warning)
        self.assertEqual(warning["log_level"].name, "warn")
        self.assertEqual(self.h.server.statistics["http_layer_unavailable"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_websocket(self):
        """``websocket.connect`` not sent: 503, one warning without a traceback, counted."""
        protocol, transport = self.connect()
        protocol.dataReceived(upgrade_request())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "), transport.value())
        [warning] = self.warnings()
        self.assertNotIn("log_failure", warning)
        self.assertEqual(self.h.server.statistics["websocket_layer_unavailable"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_websocket_receive(self):
        """``websocket.receive`` not sent: close 1011, one warning without a traceback, counted."""
        self.down = False
        protocol, transport = self.connect()
        protocol.dataReceived(upgrade_request())
        self.h.reply(self.h.next("websocket.connect"), {"accept": True})
        transport.clear()
        self.down = True
        protocol.dataReceived(client_frame(1, b"hello"))
        frames, _ = server_frames(transport.value())
        self.assertEqual(frames[-1][0], 8)
        self.assertEqual(struct.unpack("!H", frames[-1][1][:2])[0], 1011)
        [warning] = self.warnings()
        self.assertNotIn("log_failure", warning)
        self.assertEqual(self.h.server.statistics["websocket_layer_unavailable"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])


class WebSocketBufferTests(FlowTestCase):
    """Replies to a WebSocket that stopped reading are bounded by websocket_max_buffer."""

    options = {"ping_interval": 0, "websocket_max_buffer": 4000}

    def open(self):
        protocol, transport = self.connect()
        protocol.dataReceived(upgrade_request())
        connect = self.h.next("websocket.connect")
        self.h.reply(connect, {"accept": True})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        transport.drain()
        return protocol, transport, connect

    def test_overflow_closes_1013(self):
        """Past the bound the reply is refused, the socket closes with 1013, and it is counted."""
        _, transport, connect = self.open()
        for i in range(20):
            self.h.reply(connect, {"text": "m%02d" % i + "." * 500})
        frames, rest = server_frames(transport.drain())
        self.assertEqual(rest, b"")
        texts = [payload for opcode, payload in frames if opcode == 1]
        self.assertEqual(frames[-1][0], 8)
        self.assertEqual(struct.unpack("!H", frames[-1][1][:2])[0], 1013)
        # Everything up to the bound was sent in order; nothing after the close.
        self.assertEqual(texts, [b"m%02d" % i + b"." * 500 for i in range(len(texts))])
        self.assertGreater(len(texts) * 500, 4000)
        self.assertLess(len(texts), 20)
        self.assertEqual(self.h.server.statistics["websocket_buffer_full"], 1)

    def test_reader_not_closed(self):
        """A client that keeps reading gets every reply, far past the bound in total."""
        _, transport, connect = self.open()
        received = []
        for i in range(40):
            self.h.reply(connect, {"text": "m%02d" % i + "." * 500})
            frames, _ = server_frames(transport.drain())
            received.extend(payload for opcode, payload in frames)
        self.assertEqual(len(received), 40)
        self.assertEqual(self.h.server.statistics["websocket_buffer_full"], 0)

    def test_well_behaved_client_still_served(self):
        """After one socket is closed for not reading, another one is served."""
        protocol, transport, connect = self.open()
        for i in range(20):
            self.h.reply(connect, {"text": "." * 500})
        self.assertEqual(self.h.server.statistics["websocket_buffer_full"], 1)
        protocol, transport, connect = self.open()
        protocol.dataReceived(client_frame(1, b"ping?"))
        received = self.h.next("websocket.receive")
        self.h.reply(received, {"text": received["text"]})
        frames, _ = server_frames(transport.drain())
        self.assertEqual(frames, [(1, b"ping?")])
