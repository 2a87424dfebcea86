"""enforce_ordering under a real WorkerService with 8 threads (concurrency tests)."""

from django.db.backends.signals import connection_created
from twisted.internet import defer, reactor, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from chanserve.layers import InMemoryChannelLayer
from chanserve.layers._validation import new_channel_name
from chanserve.worker import WorkerService
from tests.project import ordering_consumers
from tests.project.ordering_models import OrderRecord, ensure_table, orders
from tests.test_sessions import use_settings

THREADS = 8


def _no_sync(sender, connection, **kwargs):
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")


class OrderingWorkerTests(unittest.TestCase):
    """Many messages of one socket, back to back, consumed by 8 worker threads."""

    timeout = 120

    def setUp(self):
        ensure_table()
        # Thousands of tiny commits: don't wait for the disk on each (tests
        # need no durability). Worker threads open their own connections.
        connection_created.connect(_no_sync)
        self.addCleanup(connection_created.disconnect, _no_sync)
        self.layer = InMemoryChannelLayer(reactor=reactor, capacity=5000)
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.addCleanup(self.assertNoLateRelease)

    def assertNoLateRelease(self):
        """Every parked message was moved back at once, none by its timeout."""
        late = [e for e in self.log if "enforce_ordering" in e.get("log_format", "")
                or "released only" in e.get("log_format", "")]
        self.assertEqual(late, [])

    def start_worker(self, routing):
        worker = WorkerService(self.layer, reactor, routing, threads=THREADS)
        worker.startService()
        self.addCleanup(worker.stopService)
        return worker

    def send_socket(self, reply, count, path="/lobby/"):
        """Send connect then ``count - 1`` receives of one socket, back to back."""
        for order in range(count):
            if order == 0:
                channel, content = "websocket.connect", {
                    "path": path, "headers": [], "query_string": b""}
            else:
                channel, content = "websocket.receive", {"path": path, "text": str(order)}
            content.update(reply_channel=reply, order=order)
            self.successResultOf(self.layer.send(channel, content))

    @defer.inlineCallbacks
    def check_strict(self, count):
        self.start_worker(ordering_consumers.strict_routing)
        reply = new_channel_name("chanserve.strict!")
        done = ordering_consumers.notify_when(reply, count, reactor)
        self.send_socket(reply, count)
        yield done
        self.assertEqual(orders(reply), list(range(count)))

    def test_strict_500_in_order(self):
        """
        Strict: 500 messages sent back to back run one after another, in order.

        Ordering state in a cache session engine (the database engine is
        exercised by the next test and across processes in test_ordering_redis).
        """
        # A cache that never evicts: an evicted parked message is lost (then
        # its socket is closed after the timeout), which isn't what this tests.
        use_settings(
            self, CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.cache",
            CACHES={"default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "chanserve-ordering-tests", "OPTIONS": {"MAX_ENTRIES": 1000000}}})
        return self.check_strict(500)

    @defer.inlineCallbacks
    def test_strict_replies_in_order(self):
        """
        Strict: replies reach the reply channel in the messages' order (a
        message's held sends go out before its successor may run).
        """
        use_settings(
            self, CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.cache",
            CACHES={"default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "chanserve-ordering-replies", "OPTIONS": {"MAX_ENTRIES": 1000000}}})
        self.start_worker(ordering_consumers.strict_reply_routing)
        prefix = "chanserve.replies!"
        reply = new_channel_name(prefix)
        count = 40
        # Messages trickle in, so many arrive just after their predecessor
        # is recorded as done, while its thread is still busy afterwards.
        messages = iter(range(count))

        def send_next():
            order = next(messages, None)
            if order is None:
                sender.stop()
                return
            channel = "websocket.connect" if order == 0 else "websocket.receive"
            self.layer.send(channel, {"path": "/", "headers": [], "query_string": b"",
                                      "text": str(order), "reply_channel": reply,
                                      "order": order})

        sender = task.LoopingCall(send_next)
        sender.clock = reactor
        sender.start(0.01)
        texts = []
        while len(texts) < count:
            _channel, content = yield self.layer.receive([prefix])
            if "text" in content:
                texts.append(int(content["text"]))
        self.assertEqual(texts, list(range(count)))

    def test_strict_in_order_database_engine(self):
        """Strict, with ordering state in the database session engine: 100 messages in order."""
        return self.check_strict(100)

    @defer.inlineCallbacks
    def test_unordered_control(self):
        """Without enforce_ordering the same load does run out of order (the test can fail)."""
        self.start_worker(ordering_consumers.unordered_routing)
        reply = new_channel_name("chanserve.control!")
        done = ordering_consumers.notify_when(reply, 300, reactor)
        self.send_socket(reply, 300)
        yield done
        self.assertEqual(sorted(orders(reply)), list(range(300)))
        self.assertNotEqual(orders(reply), list(range(300)))

    @defer.inlineCallbacks
    def run_rooms(self, routing):
        """
        12 sockets, one after another, each sending its connect and 19
        receives back to back (so the receives compete with their connect for
        the threads); fires with ``{(socket, room): [(order, room seen), ...]}``
        in the order they ran.
        """
        self.start_worker(routing)
        results = {}
        for i in range(12):
            reply, room = new_channel_name("chanserve.slight!"), f"room{i}"
            done = ordering_consumers.notify_when(reply, 20, reactor)
            self.send_socket(reply, 20, path=f"/{room}/")
            yield done
            results[reply, room] = list(OrderRecord.objects.filter(socket=reply)
                                        .order_by("id").values_list("order", "room"))
        return results

    @defer.inlineCallbacks
    def test_slight_receivers_see_room(self):
        """Slight: every receive consumer sees the room its socket's connect consumer saved."""
        results = yield self.run_rooms(ordering_consumers.slight_routing)
        for (reply, room), records in results.items():
            self.assertEqual(len(records), 20)
            self.assertEqual(records[0], (0, room))
            self.assertEqual({r for _, r in records}, {room})

    @defer.inlineCallbacks
    def test_slight_control(self):
        """Without enforce_ordering the same load has receives that miss the room."""
        results = yield self.run_rooms(ordering_consumers.unordered_rooms_routing)
        seen = [r for records in results.values() for _, r in records]
        self.assertEqual(len(seen), 12 * 20)
        self.assertIn(None, seen)
