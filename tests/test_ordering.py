"""enforce_ordering: a socket's messages run in order, without busy-waiting or wedging."""

from django.contrib.sessions.models import Session
from twisted.internet import defer, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from chanserve.channel import Message, holding_sends
from chanserve.exceptions import ConsumeLater
from chanserve.layers import InMemoryChannelLayer
from chanserve.layers._validation import new_channel_name
from chanserve.sessions import (
    DEFAULT_ORDERING_TIMEOUT,
    _Markers,
    _Ordering,
    _timers,
    channel_session,
    channel_session_key,
    enforce_ordering,
    get_channel_session_engine,
    session_for_reply_channel,
)
from tests.test_sessions import use_settings

PREFIX = "chanserve.order!"
CHANNELS = ["websocket.connect", "websocket.receive", "websocket.disconnect"]


def ws_message(layer, reply, order, **extra):
    """A websocket message of ``reply``'s socket with ``order`` (0: connect)."""
    if order == 0:
        channel = "websocket.connect"
        content = {"path": "/lobby/", "headers": [], "query_string": b""}
    elif extra.pop("disconnect", False):
        channel = "websocket.disconnect"
        content = {"path": "/lobby/", "code": 1000}
    else:
        channel = "websocket.receive"
        content = {"path": "/lobby/", "text": str(order)}
    content.update(reply_channel=reply, order=order, **extra)
    return Message(content, channel, layer)


def drain(layer, consumer):
    """
    Act as a worker would: run ``consumer`` for every queued websocket message,
    inside holding_sends, until none is left. Returns how many ran.
    """
    ran = 0
    while True:
        d = layer.receive(CHANNELS)
        if not d.called:
            d.addErrback(lambda f: f.trap(defer.CancelledError))
            d.cancel()
            return ran
        box = []
        d.addCallback(box.append)
        channel, content = box[0]
        with holding_sends() as held:
            try:
                consumer(Message(content, channel, layer))
            except ConsumeLater:
                held.discard()
                layer.send(channel, content)
                return ran
        held.flush()
        ran += 1


def socket_markers(reply):
    """The session-engine records ordering keeps for a socket (by key prefix)."""
    markers = _Markers(get_channel_session_engine(), reply)
    keys = [markers.key(kind, n) for kind in ("done", "park", "claim", "closed") for n in range(12)]
    return list(Session.objects.filter(session_key__in=keys).values_list("session_key", flat=True))


class OrderingTestsMixin:
    """A clock-driven in-memory layer and a recording consumer."""

    slight = False

    def setUp(self):
        from tests.project import ensure_database
        ensure_database()
        self.clock = task.Clock()
        self.layer = InMemoryChannelLayer(reactor=self.clock, capacity=1000)
        self.reply = new_channel_name(PREFIX)
        self.ran = []
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        @enforce_ordering(slight=self.slight)
        def consumer(message):
            self.ran.append(message.content["order"])
        self.consumer = consumer

    def message(self, order, **extra):
        return ws_message(self.layer, self.reply, order, **extra)

    def replies(self):
        """Messages sent to the socket's reply channel so far."""
        out = []
        while True:
            d = self.layer.receive([PREFIX])
            if not d.called:
                d.addErrback(lambda f: f.trap(defer.CancelledError))
                d.cancel()
                return out
            d.addCallback(lambda item: out.append(item[1]))

    def queued(self):
        stats = []
        self.layer.statistics().addCallback(stats.append)
        return stats[0]["queue_depth"]

    def tearDown(self):
        self.assertEqual(_timers.pending(), 0, "a parked message's timer was left behind")


class StrictOrderingTests(OrderingTestsMixin, unittest.SynchronousTestCase):
    """Strict mode: message n runs only after message n-1 finished."""

    def test_in_order_run_at_once(self):
        """Messages arriving in order run at once, nothing parked."""
        for n in range(4):
            self.consumer(self.message(n))
        self.assertEqual(self.ran, [0, 1, 2, 3])
        self.assertEqual(self.queued(), {})

    def test_out_of_order_parked_then_released(self):
        """Early messages are parked and run, in order, once their predecessors finish."""
        self.consumer(self.message(3))
        self.consumer(self.message(2))
        self.consumer(self.message(1))
        self.assertEqual(self.ran, [])
        self.consumer(self.message(0))
        self.assertEqual(self.ran, [0])
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [0, 1, 2, 3])

    def test_parked_without_busy_waiting(self):
        """A parked message is not requeued: no queued message, one timer, until it's due."""
        self.consumer(self.message(0))
        self.consumer(self.message(2))
        self.assertEqual(self.queued(), {})
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(drain(self.layer, self.consumer), 0)
        self.consumer(self.message(1))
        # Message 1 ran and moved 2 back: exactly one message queued.
        self.assertEqual(self.queued(), {"websocket.receive": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [0, 1, 2])

    def test_released_message_held_until_consumer_finishes(self):
        """Inside a consumer, the successor is put back after the consumer's own sends."""
        self.consumer(self.message(0))
        self.consumer(self.message(2))
        with holding_sends() as held:
            self.consumer(self.message(1))
            self.assertEqual(self.queued(), {})
        self.assertEqual(len(held), 1)
        held.flush()
        self.assertEqual(self.queued(), {"websocket.receive": 1})
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [0, 1, 2])

    def test_predecessor_finishes_while_parking(self):
        """A predecessor finishing between the order check and the parking still releases it."""
        self.consumer(self.message(0))
        message = self.message(2)
        ordering = _Ordering(message, False, 30)
        self.assertFalse(ordering.may_run(2))
        # Message 1 finishes now, before 2 is parked: nothing parked to release yet.
        self.consumer(self.message(1))
        self.assertEqual(self.queued(), {})
        ordering.park(2)
        self.assertEqual(self.queued(), {"websocket.receive": 1})
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [0, 1, 2])

    def test_content_survives_parking(self):
        """A parked message comes back with the same content, bytes and str kept apart."""
        seen = []

        @enforce_ordering
        def consumer(message):
            seen.append(dict(message.content))
        consumer(self.message(0))
        original = self.message(2, bytes=b"\x00\xff", extra={"a": [1, 2.5, None, "s"]}).content
        consumer(Message(dict(original), "websocket.receive", self.layer))
        self.assertEqual(len(seen), 1)
        consumer(self.message(1))
        drain(self.layer, consumer)
        self.assertEqual(len(seen), 3)
        self.assertEqual(seen[2], original)
        self.assertIsInstance(seen[2]["bytes"], bytes)

    def test_missing_predecessor_closes_socket(self):
        """A message whose predecessor never comes closes the socket after the timeout, logged."""
        self.consumer(self.message(0))
        self.consumer(self.message(2))
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT - 1)
        self.assertEqual(self.replies(), [])
        self.clock.advance(1)
        self.assertEqual(self.replies(), [{"close": 1011}])
        self.assertEqual(self.ran, [0])
        warnings = [e for e in self.log if "never finished" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["order"], warnings[0]["pred"]), (2, 1))
        markers = _Markers(get_channel_session_engine(), self.reply)
        self.assertEqual(sorted(socket_markers(self.reply)),
                         sorted([markers.key("done", 0), markers.key("closed", 0)]))
        # A late predecessor finds nothing left to release.
        self.consumer(self.message(1))
        self.assertEqual(self.queued(), {})

    def test_long_chain_making_progress_not_closed(self):
        """A message behind a parked predecessor isn't timed out while the chain can move."""
        self.consumer(self.message(0))
        self.consumer(self.message(3))
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT - 1)
        self.consumer(self.message(2))
        self.clock.advance(1)
        # 3's time is up, but 2 (parked later) still waits for 1 within its own time.
        self.consumer(self.message(1))
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [0, 1, 2, 3])
        self.assertEqual(self.replies(), [])

    def test_chain_head_without_timer(self):
        """If the chain's head lost its timer (its process died), the next one closes the socket."""
        self.consumer(self.message(0))
        self.consumer(self.message(2))
        self.consumer(self.message(3))
        markers = _Markers(get_channel_session_engine(), self.reply)
        _timers.cancel(self.clock, markers.key("park", 2))
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT * 2)
        self.assertEqual(self.replies(), [])
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT)
        self.assertEqual(self.replies(), [{"close": 1011}])
        # Message 2's record stays (no timer of this process knows it); it expires.
        markers.delete("park", 2)

    def test_one_close_for_a_broken_chain(self):
        """When the head of a chain of parked messages times out, the socket is closed once."""
        self.consumer(self.message(0))
        for n in (4, 2, 3):
            self.consumer(self.message(n))
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT)
        self.assertEqual(self.replies(), [{"close": 1011}])
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT)
        self.assertEqual(self.replies(), [])
        warnings = [e for e in self.log if "never finished" in e.get("log_format", "")]
        self.assertEqual([e["order"] for e in warnings], [2])
        markers = _Markers(get_channel_session_engine(), self.reply)
        self.assertEqual(sorted(socket_markers(self.reply)),
                         sorted([markers.key("done", 0), markers.key("closed", 0)]))
        self.assertEqual(self.ran, [0])

    def test_disconnect_runs_after_timeout(self):
        """A disconnect whose predecessor never finished runs at the timeout (cleanup), no close."""
        @enforce_ordering
        @channel_session
        def consumer(message):
            self.ran.append(message.channel.name)
        # The connect never reached an ordered consumer (e.g. refused by an outer decorator).
        consumer(self.message(1, disconnect=True))
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT)
        drain(self.layer, consumer)
        self.assertEqual(self.ran, ["websocket.disconnect"])
        self.assertEqual(self.replies(), [])
        self.assertEqual(socket_markers(self.reply), [])

    def test_timeout_setting_and_argument(self):
        """CHANNEL_ORDERING_TIMEOUT sets the wait; the decorator's timeout= overrides it."""
        use_settings(self, CHANNEL_ORDERING_TIMEOUT=5)
        self.consumer(self.message(0))
        self.consumer(self.message(2))
        self.clock.advance(5)
        self.assertEqual(self.replies(), [{"close": 1011}])

        @enforce_ordering(timeout=2)
        def quick(message):
            pass
        self.reply = new_channel_name(PREFIX)
        quick(self.message(1))
        self.clock.advance(2)
        self.assertEqual(self.replies(), [{"close": 1011}])

    def test_exception_does_not_wedge(self):
        """A consumer that raises still counts as done: its successors run."""
        @enforce_ordering
        def consumer(message):
            self.ran.append(message.content["order"])
            if message.content["order"] == 1:
                raise RuntimeError("boom")
        consumer(self.message(0))
        consumer(self.message(2))
        self.assertRaises(RuntimeError, consumer, self.message(1))
        drain(self.layer, consumer)
        self.assertEqual(self.ran, [0, 1, 2])

    def test_consume_later_is_not_done(self):
        """A consumer raising ConsumeLater hasn't finished: its successor keeps waiting."""
        attempts = []

        @enforce_ordering
        def consumer(message):
            order = message.content["order"]
            attempts.append(order)
            if order == 1 and attempts.count(1) == 1:
                raise ConsumeLater()
            self.ran.append(order)
        consumer(self.message(0))
        consumer(self.message(2))
        self.assertRaises(ConsumeLater, consumer, self.message(1))
        self.assertEqual(self.queued(), {})
        consumer(self.message(1))
        drain(self.layer, consumer)
        self.assertEqual(self.ran, [0, 1, 2])

    def test_session_saved_before_successor_runs(self):
        """The successor sees what its predecessor saved in the channel session."""
        seen = []

        @enforce_ordering
        def connect(message):
            message.channel_session["room"] = "lobby"

        @enforce_ordering
        def receive(message):
            seen.append(message.channel_session.get("room"))

        def route(message):
            return (connect if message.channel.name == "websocket.connect" else receive)(message)
        route(self.message(1))
        route(self.message(0))
        drain(self.layer, route)
        self.assertEqual(seen, ["lobby"])

    def test_outer_channel_session_reloaded(self):
        """With @channel_session outside @enforce_ordering, the session is read after the check."""
        seen = []

        @enforce_ordering
        def ordered(message):
            seen.append(dict(message.channel_session))
            message.channel_session["last"] = message.content["order"]

        def connect_finishes_meanwhile(func):
            def inner(message):
                if message.content["order"] == 1:
                    # Message 1's session is already loaded; message 0 now
                    # runs to the end before 1's order check.
                    channel_session(ordered)(self.message(0))
                return func(message)
            return inner
        consumer = channel_session(connect_finishes_meanwhile(ordered))
        consumer(self.message(1))
        self.assertEqual(seen, [{}, {"last": 0}])
        self.assertEqual(session_for_reply_channel(self.reply)["last"], 1)

    def test_disconnect_leaves_nothing_behind(self):
        """After the disconnect ran, no ordering record nor session of the socket remains."""
        @enforce_ordering
        @channel_session
        def consumer(message):
            message.channel_session["seen"] = message.content["order"]
        consumer(self.message(2, disconnect=True))
        consumer(self.message(1))
        consumer(self.message(0))
        drain(self.layer, consumer)
        self.assertEqual(socket_markers(self.reply), [])
        self.assertFalse(Session.objects.filter(
            session_key=channel_session_key(self.reply)).exists())

    def test_decorator_forms(self):
        """@enforce_ordering and @enforce_ordering() are both strict."""
        @enforce_ordering()
        def called(message):
            self.ran.append(("called", message.content["order"]))
        called(self.message(1))
        self.assertEqual(self.ran, [])
        called(self.message(0))
        drain(self.layer, called)
        self.assertEqual(self.ran, [("called", 0), ("called", 1)])

    def test_needs_order_and_reply_channel(self):
        """Messages without order or reply_channel get a clear ValueError."""
        e = self.assertRaises(ValueError, self.consumer, Message(
            {"reply_channel": self.reply}, "websocket.receive", self.layer))
        self.assertIn("order", str(e))
        e = self.assertRaises(ValueError, self.consumer, Message(
            {"order": 1}, "chat-messages", self.layer))
        self.assertIn("reply_channel", str(e))
        self.assertEqual(self.ran, [])


class SlightOrderingTests(OrderingTestsMixin, unittest.SynchronousTestCase):
    """Slight mode: only the connect message (order 0) must finish before the others."""

    slight = True

    def test_early_messages_wait_for_connect(self):
        """Messages before the connect finished are parked, then all released."""
        self.consumer(self.message(2))
        self.consumer(self.message(1))
        self.consumer(self.message(3))
        self.assertEqual(self.ran, [])
        self.consumer(self.message(0))
        drain(self.layer, self.consumer)
        self.assertEqual(sorted(self.ran), [0, 1, 2, 3])
        self.assertEqual(self.ran[0], 0)

    def test_after_connect_no_order(self):
        """Once connected, messages run as they come, out of order included."""
        self.consumer(self.message(0))
        self.consumer(self.message(3))
        self.consumer(self.message(1))
        self.assertEqual(self.ran, [0, 3, 1])
        self.assertEqual(self.queued(), {})

    def test_message_that_ran_at_once_releases_the_next(self):
        """A message parked before the connect finished is released by its predecessor running."""
        self.consumer(self.message(2))
        self.consumer(self.message(0))
        # The connect's scan stopped at 1, which never parked.
        self.assertEqual(self.queued(), {})
        self.consumer(self.message(1))
        self.assertEqual(self.queued(), {"websocket.receive": 1})
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [0, 1, 2])

    def test_gap_does_not_strand_later_messages(self):
        """A message whose connect finished elsewhere without releasing it goes at its timeout."""
        self.consumer(self.message(2))
        _Markers(get_channel_session_engine(), self.reply).create("done", 0)
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT)
        self.assertEqual(self.replies(), [])
        drain(self.layer, self.consumer)
        self.assertEqual(self.ran, [2])

    def test_missing_connect_closes_socket(self):
        """Without a connect, waiting messages close the socket at the timeout."""
        self.consumer(self.message(1))
        self.clock.advance(DEFAULT_ORDERING_TIMEOUT)
        self.assertEqual(self.replies(), [{"close": 1011}])
        self.assertEqual(self.ran, [])

    def test_disconnect_marks_for_expiry(self):
        """After the disconnect, the connect record stays only until it expires."""
        self.consumer(self.message(0))
        self.consumer(self.message(1, disconnect=True))
        key = _Markers(get_channel_session_engine(), self.reply).key("done", 0)
        record = Session.objects.get(session_key=key)
        from django.utils import timezone
        self.assertLess((record.expire_date - timezone.now()).total_seconds(),
                        DEFAULT_ORDERING_TIMEOUT + 5)


class ConsumerClientOrderingTests(unittest.SynchronousTestCase):
    """The seed's ordered chat under chanserve.testing.ConsumerClient (what users test with)."""

    def setUp(self):
        from tests.project import ensure_database
        ensure_database()

    def test_receive_before_connect(self):
        """A receive consumed before its connect waits, then runs with the connect's session."""
        from chanserve.routing import route
        from chanserve.testing import ConsumerClient

        @enforce_ordering(slight=True)
        @channel_session
        def ws_connect(message):
            message.channel_session["room"] = message.content["path"].strip("/")

        @enforce_ordering(slight=True)
        @channel_session
        def ws_message(message):
            message.reply_channel.send(
                {"text": message.channel_session["room"] + ": " + message.content["text"]})

        routing = [route("websocket.connect", ws_connect), route("websocket.receive", ws_message)]
        with ConsumerClient(routing) as client:
            client.send_and_consume("websocket.receive", path="/lobby/", text="early", order=1)
            self.assertEqual(client.replies(), [])
            client.send_and_consume("websocket.connect", path="/lobby/", order=0)
            client.consume_all()
            self.assertEqual(client.replies(), [{"accept": True}, {"text": "lobby: early"}])
