"""Origin checks for websocket.connect and unguessable reply channels."""

import base64

from twisted.internet import defer, reactor, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from chanserve.channel import Message
from chanserve.exceptions import DenyConnection
from chanserve.layers import InMemoryChannelLayer
from chanserve.routing import route
from chanserve.security import (
    AllowedHostsOnlyOriginValidator,
    allowed_hosts_only,
    get_origin,
    origin_allowed,
    origin_validator,
)
from chanserve.server import InterfaceServer
from chanserve.sessions import channel_session_key
from chanserve.worker import WorkerService
from tests.test_sessions import use_settings


def connect(layer, *headers, channel="websocket.connect"):
    return Message({"reply_channel": "chanserve.sec!abc", "path": "/", "order": 0,
                    "headers": [list(h) for h in headers]}, channel, layer)


class AllowedHostsOnlyTests(unittest.SynchronousTestCase):
    """@allowed_hosts_only lets through only handshakes from pages of ALLOWED_HOSTS."""

    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=task.Clock())
        self.ran = []

        @allowed_hosts_only
        def consumer(message):
            self.ran.append(message)
        self.consumer = consumer
        use_settings(self, ALLOWED_HOSTS=["example.com", ".example.org"], DEBUG=False)

    def test_allowed_origin_runs_consumer(self):
        """An Origin whose host is allowed (any scheme or port) runs the consumer."""
        for origin in (b"https://example.com", b"http://example.com:8000",
                       b"https://chat.example.org", b"https://example.org"):
            self.consumer(connect(self.layer, (b"origin", origin)))
        self.assertEqual(len(self.ran), 4)

    def test_other_origin_denied(self):
        """Another site's Origin raises DenyConnection (HTTP 403) without running the consumer."""
        for origin in (b"https://evil.com", b"https://example.com.evil.com",
                       b"https://notexample.com", b"null", b"not a url"):
            self.assertRaises(DenyConnection, self.consumer,
                              connect(self.layer, (b"origin", origin)))
        self.assertEqual(self.ran, [])

    def test_missing_repeated_or_non_ascii_origin_denied(self):
        """No Origin, two Origins, or a non-ASCII Origin: denied."""
        self.assertRaises(DenyConnection, self.consumer, connect(self.layer, (b"host", b"x")))
        self.assertRaises(DenyConnection, self.consumer, connect(
            self.layer, (b"origin", b"https://example.com"), (b"origin", b"https://evil.com")))
        self.assertRaises(DenyConnection, self.consumer, connect(
            self.layer, (b"origin", "https://exämple.com".encode("utf-8"))))
        self.assertEqual(self.ran, [])

    def test_debug_localhost(self):
        """With DEBUG and an empty ALLOWED_HOSTS, local origins are allowed (as Django does)."""
        use_settings(self, ALLOWED_HOSTS=[], DEBUG=True)
        self.consumer(connect(self.layer, (b"origin", b"http://localhost:8000")))
        self.consumer(connect(self.layer, (b"origin", b"http://[::1]:8000")))
        self.assertRaises(DenyConnection, self.consumer,
                          connect(self.layer, (b"origin", b"http://example.com")))
        self.assertEqual(len(self.ran), 2)

    def test_wildcard(self):
        """ALLOWED_HOSTS = ['*'] allows every origin (but still needs one)."""
        use_settings(self, ALLOWED_HOSTS=["*"])
        self.consumer(connect(self.layer, (b"origin", b"https://anything.test")))
        self.assertEqual(len(self.ran), 1)
        self.assertRaises(DenyConnection, self.consumer, connect(self.layer))

    def test_only_for_connect(self):
        """Applied to another channel's consumer it is a clear error."""
        e = self.assertRaises(ValueError, self.consumer, connect(
            self.layer, (b"origin", b"https://example.com"), channel="websocket.receive"))
        self.assertIn("websocket.connect", str(e))

    def test_class_name_and_wrapping(self):
        """allowed_hosts_only is Channels' AllowedHostsOnlyOriginValidator and keeps the name."""
        self.assertIs(allowed_hosts_only, AllowedHostsOnlyOriginValidator)
        self.assertEqual(self.consumer.__name__, "consumer")


class OriginValidatorTests(unittest.SynchronousTestCase):
    """origin_validator(patterns) and origin_allowed with scheme and port patterns."""

    def test_patterns(self):
        """Host patterns ignore scheme/port; scheme patterns must match scheme and port."""
        cases = [
            ("https://example.com", ["example.com"], True),
            ("https://example.com", ["https://example.com"], True),
            ("http://example.com", ["https://example.com"], False),
            ("https://example.com:8443", ["https://example.com"], False),
            ("https://example.com:8443", ["https://example.com:8443"], True),
            ("https://example.com:443", ["https://example.com"], True),
            ("https://a.example.com", ["https://*.example.com"], True),
            ("https://a.example.com", ["https://.example.com"], True),
            ("https://example.com", ["https://*.example.com"], True),
            ("https://evilexample.com", [".example.com"], False),
            ("http://[::1]:8000", ["[::1]"], True),
            ("null", ["*"], False),
        ]
        for origin, patterns, expected in cases:
            self.assertEqual(origin_allowed(origin, patterns), expected, (origin, patterns))

    def test_decorator(self):
        """The decorator form runs allowed handshakes and denies others."""
        ran = []

        @origin_validator(["https://chat.example.com"])
        def consumer(message):
            ran.append(message)
        layer = InMemoryChannelLayer(reactor=task.Clock())
        consumer(connect(layer, (b"origin", b"https://chat.example.com")))
        self.assertRaises(DenyConnection, consumer,
                          connect(layer, (b"Origin", b"https://example.com")))
        self.assertEqual(len(ran), 1)

    def test_get_origin(self):
        """get_origin reads the header case-insensitively, str or bytes."""
        self.assertEqual(get_origin({"headers": [[b"Origin", b"https://a.b"]]}), "https://a.b")
        self.assertEqual(get_origin({"headers": [["origin", "https://a.b"]]}), "https://a.b")
        self.assertIsNone(get_origin({}))


class WorkerRejectsTests(unittest.TestCase):
    """Through the worker, a denied origin becomes {"accept": False} (HTTP 403)."""

    @defer.inlineCallbacks
    def test_denied_handshake(self):
        """A connect from another site is rejected; an allowed one accepted."""
        use_settings(self, ALLOWED_HOSTS=["example.com"])
        layer = InMemoryChannelLayer(reactor=reactor)

        @allowed_hosts_only
        def ws_connect(message):
            pass
        worker = WorkerService(layer, reactor, [route("websocket.connect", ws_connect)],
                               threads=2)
        worker.startService()
        self.addCleanup(worker.stopService)
        for name, origin in (("evil", b"https://evil.com"), ("good", b"https://example.com")):
            layer.send("websocket.connect", {
                "reply_channel": f"chanserve.sec!{name}", "path": "/", "order": 0,
                "headers": [[b"origin", origin]], "query_string": b""})
        replies = {}
        for _ in range(2):
            channel, content = yield layer.receive(["chanserve.sec!"])
            replies[channel] = content
        # The worker may log the DenyConnection it turned into a rejection.
        self.flushLoggedErrors(DenyConnection)
        self.assertEqual(replies, {"chanserve.sec!evil": {"accept": False},
                                   "chanserve.sec!good": {"accept": True}})


class ReplyChannelTests(unittest.SynchronousTestCase):
    """Reply channels are unguessable, so channel sessions are too."""

    def test_reply_channels_have_96_random_bits(self):
        """The interface server's reply channel names carry at least 96 random bits."""
        server = InterfaceServer(InMemoryChannelLayer(reactor=task.Clock()),
                                 MemoryReactorClock(), ["tcp:0"])
        names = {server.new_reply_channel() for _ in range(100)}
        self.assertEqual(len(names), 100)
        for name in names:
            prefix, _, token = name.partition("!")
            self.assertEqual(prefix + "!", server.prefix)
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            self.assertGreaterEqual(len(raw) * 8, 96)

    def test_session_key_depends_on_whole_name(self):
        """Reply channels differing in one character have unrelated session keys."""
        a, b = "chanserve.p!AAAAAAAAAAAAAAAA", "chanserve.p!AAAAAAAAAAAAAAAB"
        ka, kb = channel_session_key(a), channel_session_key(b)
        self.assertNotEqual(ka, kb)
        same = sum(x == y for x, y in zip(ka[3:], kb[3:]))
        self.assertLess(same, len(ka) // 2)
