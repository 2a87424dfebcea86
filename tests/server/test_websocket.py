"""WebSocket in the interface server, in memory: the held handshake, frames, limits, timers."""

import io
import struct

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from .support import Harness, client_frame, server_frames, upgrade_request


class WebSocketTestCase(SynchronousTestCase):
    """Shared set-up: a harness, and helpers to open sockets."""

    options = {"ping_interval": 0}
    layer_options = None

    def setUp(self):
        self.h = Harness(layer_options=self.layer_options, **self.options)
        self.addCleanup(self.h.stop)

    def handshake(self, path=b"/ws/?room=1", extra=b""):
        """Send an upgrade request; return (protocol, transport, websocket.connect message)."""
        protocol, transport = self.h.connect()
        protocol.dataReceived(upgrade_request(path, extra))
        return protocol, transport, self.h.next("websocket.connect")

    def open(self, **kw):
        protocol, transport, connect = self.handshake(**kw)
        self.h.reply(connect, {"accept": True})
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        transport.clear()
        return protocol, transport, connect

    def frames(self, transport):
        frames, rest = server_frames(transport.value())
        self.assertEqual(rest, b"")
        transport.clear()
        return frames

    def close_code(self, transport):
        frames = self.frames(transport)
        self.assertEqual(frames[-1][0], 8, frames)
        return struct.unpack("!H", frames[-1][1][:2])[0]

    def assertServed(self):
        """A fresh, well-behaved client still gets an echo."""
        protocol, transport, connect = self.open()
        protocol.dataReceived(client_frame(1, b"ping?"))
        received = self.h.next("websocket.receive")
        self.h.reply(received, {"text": received["text"]})
        self.assertEqual(self.frames(transport), [(1, b"ping?")])


class HandshakeTests(WebSocketTestCase):
    """The opening handshake waits for the connect consumer's answer."""

    options = {"ping_interval": 0, "root_path": "/r", "websocket_connect_timeout": 5.0}

    def test_connect_message(self):
        """``websocket.connect`` carries the contract keys, ``order`` 0, and nothing is written yet."""
        _, transport, connect = self.handshake(extra=b"Cookie: a=b\r\n")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(connect["order"], 0)
        self.assertEqual(connect["scheme"], "ws")
        self.assertEqual(connect["path"], "/ws/")
        self.assertEqual(connect["query_string"], b"room=1")
        self.assertEqual(connect["root_path"], "/r")
        self.assertEqual(connect["client"], ["10.0.0.7", 50000])
        self.assertEqual(connect["server"], ["127.0.0.1", 8000])
        self.assertIn([b"cookie", b"a=b"], connect["headers"])
        self.assertTrue(connect["reply_channel"].startswith(self.h.server.prefix))

    def test_accept(self):
        """``accept: True`` completes the handshake with 101."""
        self.open()

    def test_reject(self):
        """``accept: False`` refuses with 403 and closes."""
        _, transport, connect = self.handshake()
        self.h.reply(connect, {"accept": False})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_close_before_accept(self):
        """``close`` before the socket is accepted refuses with 403."""
        _, transport, connect = self.handshake()
        self.h.reply(connect, {"close": True})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))

    def test_internal_error_before_accept(self):
        """``close: 1011`` before the accept (the connect consumer raised): 500, as Daphne."""
        _, transport, connect = self.handshake()
        self.h.reply(connect, {"close": 1011})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "))

    def test_frame_accepts(self):
        """A ``text`` reply before accepting accepts the socket, then sends the frame."""
        _, transport, connect = self.handshake()
        self.h.reply(connect, {"text": "hello"})
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(server_frames(rest)[0], [(1, b"hello")])

    def test_answer_during_connect(self):
        """A consumer answering while ``websocket.connect`` is still being sent (in-memory layer)."""
        def answer(result):
            channel, message = result
            self.h.reply(message, {"text": "first", "close": 4002})
        self.h.layer.receive(["websocket.connect"]).addCallback(answer)
        protocol, transport = self.h.connect()
        protocol.dataReceived(upgrade_request())
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "))
        frames = server_frames(rest)[0]
        self.assertEqual(frames[0], (1, b"first"))
        self.assertEqual(struct.unpack("!H", frames[1][1][:2])[0], 4002)

    def test_late_accept_ignored(self):
        """A second accept (the worker's implicit one) after an explicit one changes nothing."""
        _, transport, connect = self.open()
        self.h.reply(connect, {"accept": True})
        self.assertEqual(transport.value(), b"")

    def test_accept_after_reject_ignored(self):
        """The worker's implicit accept after a reject does not open the socket."""
        _, transport, connect = self.handshake()
        self.h.reply(connect, {"accept": False})
        self.h.reply(connect, {"accept": True})
        self.assertNotIn(b" 101 ", transport.value())

    def test_connect_timeout(self):
        """No answer within ``websocket_connect_timeout``: 403."""
        _, transport, connect = self.handshake()
        self.h.reactor.advance(4.9)
        self.assertEqual(transport.value(), b"")
        self.h.reactor.advance(0.2)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))
        self.assertFalse(transport.connected)
        self.assertEqual(self.h.next("websocket.disconnect")["order"], 1)
        self.assertServed()

    def test_frames_before_accept_wait(self):
        """Frames arriving before the accept are delivered after it, in order."""
        protocol, transport, connect = self.handshake()
        protocol.dataReceived(client_frame(1, b"early\r\n\r\n"))
        self.assertIsNone(self.h.next("websocket.receive"))
        self.h.reply(connect, {"accept": True})
        received = self.h.next("websocket.receive")
        self.assertEqual((received["text"], received["order"]), ("early\r\n\r\n", 1))

    def test_early_flood_paused(self):
        """A client flooding frames before the answer is paused, and resumed on accept."""
        protocol, transport, connect = self.handshake()
        protocol.dataReceived(client_frame(2, b"x" * 70000))
        self.assertEqual(transport.producerState, "paused")
        self.h.reply(connect, {"accept": True})
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(self.h.next("websocket.receive")["bytes"]), 70000)

    def test_replies_unreceivable_503(self):
        """A handshake while this server's replies can't arrive: 503 at once, no connect sent."""
        self.patch(self.h.server, "_receivable", lambda channel: False)
        protocol, transport = self.h.connect()
        protocol.dataReceived(upgrade_request())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "), transport.value())
        self.assertIsNone(self.h.next("websocket.connect"))

    def test_subprotocol_default(self):
        """
        Without a choice by the consumer no subprotocol is selected (as
        Daphne does): the server must not claim to speak what the client
        merely offered. Browsers accept the handshake without one.
        """
        _, transport, connect = self.handshake(extra=b"Sec-WebSocket-Protocol: chat, superchat\r\n")
        self.assertEqual(connect["headers"][-1], [b"sec-websocket-protocol", b"chat, superchat"])
        self.h.reply(connect, {"accept": True})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertNotIn(b"sec-websocket-protocol", transport.value().lower())

    def test_server_protocols(self):
        """
        With ``websocket_protocols`` (``--websocket-protocol``), the client's
        first offered one the server speaks is selected when the consumer
        chose none.
        """
        self.h.server.websocket_protocols = ("graphql-ws", "superchat")
        _, transport, connect = self.handshake(
            extra=b"Sec-WebSocket-Protocol: chat, superchat, graphql-ws\r\n")
        self.h.reply(connect, {"accept": True})
        self.assertIn(b"Sec-WebSocket-Protocol: superchat\r\n", transport.value())

    def test_subprotocol_chosen(self):
        """``subprotocol`` in the accept picks one of the offered subprotocols."""
        _, transport, connect = self.handshake(extra=b"Sec-WebSocket-Protocol: chat, superchat\r\n")
        self.h.reply(connect, {"accept": True, "subprotocol": "superchat"})
        self.assertIn(b"Sec-WebSocket-Protocol: superchat\r\n", transport.value())

    def test_permessage_deflate(self):
        """permessage-deflate offered by the client is negotiated."""
        _, transport, connect = self.handshake(
            extra=b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
        self.h.reply(connect, {"accept": True})
        self.assertIn(b"Sec-WebSocket-Extensions: permessage-deflate", transport.value())

    def test_bad_version(self):
        """An upgrade with an unsupported WebSocket version is refused by autobahn (400 class)."""
        protocol, transport = self.h.connect()
        protocol.dataReceived(upgrade_request().replace(b"Version: 13", b"Version: 7"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 4"), transport.value())
        self.assertIsNone(self.h.next("websocket.connect"))


class FrameTests(WebSocketTestCase):
    """Frames in both directions, ``order``, closing."""

    def test_receive(self):
        """Text and binary frames become ``websocket.receive`` with increasing ``order``."""
        protocol, _, connect = self.open()
        protocol.dataReceived(client_frame(1, "h\u00e9".encode()) + client_frame(2, b"\x00\xff"))
        first = self.h.next("websocket.receive")
        second = self.h.next("websocket.receive")
        self.assertEqual(first, {"reply_channel": connect["reply_channel"], "path": "/ws/",
                                 "order": 1, "text": "h\u00e9"})
        self.assertEqual((second["bytes"], second["order"]), (b"\x00\xff", 2))

    def test_send(self):
        """``text`` and ``bytes`` replies become frames."""
        _, transport, connect = self.open()
        self.h.reply(connect, {"text": "a\u00e9"})
        self.h.reply(connect, {"bytes": b"\x01\x02"})
        self.assertEqual(self.frames(transport), [(1, "a\u00e9".encode()), (2, b"\x01\x02")])

    def test_text_and_bytes_ignored(self):
        """A reply with both ``text`` and ``bytes`` is ignored and logged (ASGI; Daphne refused it)."""
        from twisted.logger import LogLevel, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        _, transport, connect = self.open()
        self.h.reply(connect, {"text": "a", "bytes": b"b"})
        self.h.reply(connect, {"text": "c", "bytes": None})
        self.assertEqual(self.frames(transport), [(1, b"c")])
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.error]), 1)

    def test_close_true(self):
        """``close: True`` closes with 1000."""
        _, transport, connect = self.open()
        self.h.reply(connect, {"close": True})
        self.assertEqual(self.close_code(transport), 1000)

    def test_close_code(self):
        """``close: 4001`` closes with that code."""
        _, transport, connect = self.open()
        self.h.reply(connect, {"text": "bye", "close": 4001})
        frames = server_frames(transport.value())[0]
        self.assertEqual(frames[0], (1, b"bye"))
        self.assertEqual(struct.unpack("!H", frames[1][1][:2])[0], 4001)

    def test_client_close(self):
        """A client's close makes ``websocket.disconnect`` with its code and the next ``order``."""
        protocol, transport, connect = self.open()
        protocol.dataReceived(client_frame(1, b"x"))
        protocol.dataReceived(client_frame(8, struct.pack("!H", 1001)))
        self.assertEqual(self.close_code(transport), 1000)  # the closing handshake's answer
        transport.loseConnection()
        self.assertEqual(self.h.next("websocket.disconnect"),
                         {"reply_channel": connect["reply_channel"], "path": "/ws/",
                          "code": 1001, "order": 2})

    def test_broadcast_framed_once(self):
        """The same reply dict sent to many sockets (a group send) is framed once."""
        sockets = [self.open() for _ in range(3)]
        for _, _, connect in sockets:
            self.h.layer.group_add("room", connect["reply_channel"])
        prepared = []
        original = self.h.server.websocket_factory.prepareMessage

        def counting(*args):
            prepared.append(args)
            return original(*args)
        self.h.server.websocket_factory.prepareMessage = counting
        self.h.layer.send_group("room", {"text": "to all"})
        self.assertEqual(len(prepared), 1)
        for _, transport, _ in sockets:
            self.assertEqual(self.frames(transport), [(1, b"to all")])

    def test_unknown_reply_keys_ignored(self):
        """Keys other than text/bytes/close/accept are ignored (the seed forwards whole messages)."""
        _, transport, connect = self.open()
        self.h.reply(connect, {"text": "x", "reply_channel": "y", "path": "/", "order": 3})
        self.assertEqual(self.frames(transport), [(1, b"x")])


class LimitTests(WebSocketTestCase):
    """Message size, UTF-8, full channels and timers; each followed by a served client."""

    options = {"ping_interval": 5.0, "ping_timeout": 3.0, "websocket_max_message": 100,
               "websocket_timeout": 60.0}
    layer_options = {"channel_capacity": {"websocket.receive": 2}}

    def test_message_too_big(self):
        """A message over ``websocket_max_message``: close 1009."""
        protocol, transport, _ = self.open()
        protocol.dataReceived(client_frame(2, b"x" * 101))
        self.assertEqual(self.close_code(transport), 1009)
        self.assertIsNone(self.h.next("websocket.receive"))
        self.assertServed()

    def test_fragmented_message_too_big(self):
        """Fragments adding up over the limit: close 1009."""
        protocol, transport, _ = self.open()
        protocol.dataReceived(client_frame(2, b"x" * 60, fin=False) + client_frame(0, b"y" * 60))
        self.assertEqual(self.close_code(transport), 1009)
        self.assertServed()

    def test_invalid_utf8(self):
        """A text frame that is not UTF-8: close 1007."""
        protocol, transport, _ = self.open()
        protocol.dataReceived(client_frame(1, b"\xff\xfe"))
        self.assertEqual(self.close_code(transport), 1007)
        self.assertServed()

    def test_receive_channel_full(self):
        """``ChannelFull`` on ``websocket.receive``: close 1013."""
        protocol, transport, _ = self.open()
        protocol.dataReceived(client_frame(1, b"a") + client_frame(1, b"b") + client_frame(1, b"c"))
        self.assertEqual(self.close_code(transport), 1013)
        self.assertEqual(self.h.server.statistics["websocket_channel_full"], 1)
        self.h.next("websocket.receive")
        self.h.next("websocket.receive")
        self.assertServed()

    def test_no_receive_after_full(self):
        """Frames arriving after the 1013 close are dropped, not numbered: no gap in ``order``."""
        protocol, transport, _ = self.open()
        protocol.dataReceived(client_frame(1, b"a") + client_frame(1, b"b") + client_frame(1, b"c"))
        self.assertEqual([self.h.next("websocket.receive")["order"] for _ in range(2)], [1, 2])
        protocol.dataReceived(client_frame(1, b"d") + client_frame(1, b"e"))
        self.assertIsNone(self.h.next("websocket.receive"))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.h.next("websocket.disconnect")["order"], 3)

    def test_ping_timeout(self):
        """A peer not answering pings is dropped after ``ping_timeout``."""
        protocol, transport, connect = self.open()
        self.h.reactor.advance(5)
        self.assertEqual(self.frames(transport)[0][0], 9)
        self.h.reactor.advance(3)
        self.assertFalse(transport.connected)
        self.assertEqual(self.h.next("websocket.disconnect")["code"], 1006)
        self.assertServed()

    def test_pong_keeps_alive(self):
        """A peer answering pings stays connected."""
        protocol, transport, _ = self.open()
        for _ in range(3):
            self.h.reactor.advance(5)
            opcode, payload = self.frames(transport)[0]
            self.assertEqual(opcode, 9)
            protocol.dataReceived(client_frame(10, payload))
            self.h.reactor.advance(1)
        self.assertTrue(transport.connected)

    def test_lifetime(self):
        """A socket open longer than ``websocket_timeout`` is closed (1000)."""
        protocol, transport, _ = self.open()
        for _ in range(12):
            self.h.reactor.advance(5)
            frames = self.frames(transport)
            if frames and frames[-1][0] == 9:
                protocol.dataReceived(client_frame(10, frames[-1][1]))
            elif frames and frames[-1][0] == 8:
                break
        self.assertEqual(struct.unpack("!H", frames[-1][1][:2])[0], 1000)
        self.assertServed()


class ConnectFullTests(WebSocketTestCase):
    """``ChannelFull`` on ``websocket.connect``."""

    layer_options = {"channel_capacity": {"websocket.connect": 1}}

    def test_connect_full(self):
        """The handshake is refused with 503 when ``websocket.connect`` is full."""
        protocol, transport = self.h.connect()
        protocol.dataReceived(upgrade_request())
        protocol, transport = self.h.connect()
        protocol.dataReceived(upgrade_request())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.h.next("websocket.connect")
        self.assertServed()


class ShutdownTests(WebSocketTestCase):
    """Stopping the server closes WebSockets with 1001."""

    def test_going_away(self):
        """``stopService`` sends close 1001 and fires once the socket is gone."""
        protocol, transport, _ = self.open()
        d = self.h.server.stopService()
        self.assertEqual(self.close_code(transport), 1001)
        self.assertNoResult(d)
        protocol.dataReceived(client_frame(8, struct.pack("!H", 1001)))
        transport.loseConnection()
        self.successResultOf(d)


class AccessLogTests(WebSocketTestCase):
    """WebSocket connects, rejects and disconnects are logged."""

    def setUp(self):
        self.log = io.StringIO()
        self.options = {"ping_interval": 0, "access_log": self.log}
        super().setUp()

    def test_lines(self):
        """WSCONNECT on accept, WSDISCONNECT with the code, WSREJECT with 403."""
        protocol, transport, connect = self.open()
        self.h.reactor.advance(2)
        protocol.dataReceived(client_frame(8, struct.pack("!H", 1000)))
        transport.loseConnection()
        _, _, rejected = self.handshake(path=b"/no/")
        self.h.reply(rejected, {"accept": False})
        lines = self.log.getvalue().splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertIn('"WSCONNECT /ws/" - - -', lines[0])
        self.assertIn('"WSDISCONNECT /ws/" 1000 - 2.000', lines[1])
        self.assertIn('"WSREJECT /no/" 403', lines[2])

    def test_escaped_path(self):
        """A WebSocket path with a decoded newline stays on its line, escaped."""
        _, _, rejected = self.handshake(path=b"/no%0aforged/")
        self.h.reply(rejected, {"accept": False})
        lines = self.log.getvalue().splitlines()
        self.assertEqual(lines, [lines[0]])
        self.assertIn('"WSREJECT /no\\x0aforged/" 403', lines[0])


class ProxyTests(WebSocketTestCase):
    """Proxy headers and the root path apply to WebSockets too."""

    options = {"ping_interval": 0, "proxy_headers": True, "trusted_proxies": ["10.0.0.0/8"]}

    def test_forwarded(self):
        """``client`` and ``scheme`` (wss) come from the trusted proxy's headers."""
        _, _, connect = self.handshake(
            extra=b"X-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n")
        self.assertEqual((connect["client"], connect["scheme"]), (["5.6.7.8", 443], "wss"))


class NotificationDropTests(WebSocketTestCase):
    """A notification nobody waits for that can't be sent is counted and logged, not lost quietly."""

    layer_options = {"channel_capacity": {"websocket.disconnect": 1}}

    def test_disconnect_full(self):
        """``websocket.disconnect`` refused (ChannelFull): ``notifications_dropped``, one warning."""
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.h.layer.send("websocket.disconnect", {"earlier": True})
        for _ in range(2):
            protocol, transport, _ = self.open()
            transport.loseConnection()
        self.assertEqual(self.h.server.statistics["notifications_dropped"], 2)
        warnings = [e for e in events if "Could not send" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["name"], "websocket.disconnect")
