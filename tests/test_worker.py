"""Tests for ``chanserve.worker.WorkerService``: dispatch, held sends, protocol replies, limits."""

import threading
from functools import partial

from twisted.internet import defer, task
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chanserve import Channel, Group
from chanserve.exceptions import ConsumeLater, DenyConnection
from chanserve.layers import InMemoryChannelLayer
from chanserve.routing import Router, route
from chanserve.worker import WorkerService, reactor_consumer, runs_on_reactor, select_channels
from chanserve.worker import _service

REPLY = "chanserve.test!conn"


class FakeReactor(task.Clock):
    """A ``Clock`` whose ``callFromThread`` runs the call at once (the pool is fake too)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class ManualThreadPool:
    """A thread pool stand-in: work waits until the test runs it, on the test's thread."""

    def __init__(self):
        self.pending = []

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        self.pending.append((onResult, f, args, kwargs))

    def run_one(self):
        onResult, f, args, kwargs = self.pending.pop(0)
        try:
            result, ok = f(*args, **kwargs), True
        except BaseException:
            from twisted.python.failure import Failure
            result, ok = Failure(), False
        onResult(ok, result)

    def run_all(self):
        while self.pending:
            self.run_one()


class ImmediateThreadPool(ManualThreadPool):
    """A thread pool stand-in that runs work at once."""

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        super().callInThreadWithCallback(onResult, f, *args, **kwargs)
        self.run_one()


class WorkerTestMixin:
    """A worker over an in-memory layer driven by a fake reactor and pool."""

    def make_worker(self, routing, pool=None, **kwargs):
        self.clock = FakeReactor()
        self.layer = InMemoryChannelLayer(reactor=self.clock, capacity=1000)
        self.pool = pool if pool is not None else ImmediateThreadPool()
        self.worker = WorkerService(self.layer, self.clock, routing, threadpool=self.pool, **kwargs)
        self.worker.startService()
        self.addCleanup(self.stop)
        return self.worker

    def stop(self):
        if self.worker.running:
            d = self.worker.stopService()
            self.pool.run_all() if isinstance(self.pool, ManualThreadPool) else None
            self.clock.advance(60)
            self.successResultOf(d)

    def send(self, channel, content):
        self.successResultOf(self.layer.send(channel, content))

    def replies(self, prefix="chanserve.test!"):
        """Every message waiting on the reply prefix, in order."""
        out = []
        while True:
            d = self.layer.receive([prefix])
            if not d.called:
                d.cancel()
                self.failureResultOf(d, defer.CancelledError)
                return out
            out.append(self.successResultOf(d)[1])


class DispatchTests(WorkerTestMixin, SynchronousTestCase):
    """Which consumer runs, where, with what, and what gets sent afterwards."""

    def test_sync_consumer_runs_in_pool_with_kwargs(self):
        """A plain consumer runs via the thread pool and gets the route's named groups."""
        seen = []
        pool = ManualThreadPool()

        def consumer(message, room):
            seen.append((message.channel.name, message.content["path"], room,
                         message.reply_channel.name))

        self.make_worker([route("websocket.receive", consumer, path=r"^/(?P<room>\w+)/$")], pool)
        self.send("websocket.receive", {"path": "/lobby/", "reply_channel": REPLY, "text": "x"})
        self.assertEqual(seen, [])
        self.assertEqual(len(pool.pending), 1)
        pool.run_one()
        self.assertEqual(seen, [("websocket.receive", "/lobby/", "lobby", REPLY)])

    def test_sends_held_until_consumer_finishes(self):
        """Sends made by a consumer are delivered, in order, only after it returns."""
        during = []

        def consumer(message):
            for i in range(3):
                message.reply_channel.send({"text": str(i)})
            during.append(self.replies())

        self.make_worker([route("websocket.receive", consumer)])
        self.send("websocket.receive", {"path": "/", "reply_channel": REPLY, "text": "x"})
        self.assertEqual(during, [[]])
        self.assertEqual(self.replies(), [{"text": "0"}, {"text": "1"}, {"text": "2"}])

    def test_immediately_bypasses_holding(self):
        """``immediately=True`` sends while the consumer still runs."""
        during = []

        def consumer(message):
            message.reply_channel.send({"text": "now"}, immediately=True)
            during.append(self.replies())

        self.make_worker([route("websocket.receive", consumer)])
        self.send("websocket.receive", {"path": "/", "reply_channel": REPLY, "text": "x"})
        self.assertEqual(during, [[{"text": "now"}]])

    def test_async_consumer_on_reactor(self):
        """An ``async def`` consumer runs on the reactor (not the pool); its sends wait for its end."""
        pool = ManualThreadPool()
        gate = defer.Deferred()

        async def consumer(message):
            message.reply_channel.send({"text": "a"})
            await gate
            Group("g", channel_layer=message.channel_layer).send({"text": "b"})
            message.reply_channel.send({"text": "c"})

        self.make_worker([route("websocket.receive", consumer)], pool)
        self.successResultOf(self.layer.group_add("g", REPLY))
        self.send("websocket.receive", {"path": "/", "reply_channel": REPLY, "text": "x"})
        self.assertEqual(pool.pending, [])
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.worker.statistics()["running_on_reactor"], 1)
        gate.callback(None)
        self.assertEqual(self.replies(), [{"text": "a"}, {"text": "b"}, {"text": "c"}])
        self.assertEqual(self.worker.statistics()["running_on_reactor"], 0)

    def test_reactor_consumer_mark(self):
        """A plain function marked ``@reactor_consumer`` runs on the reactor; its Deferred is awaited."""
        pool = ManualThreadPool()
        gate = defer.Deferred()

        @reactor_consumer
        def consumer(message):
            message.reply_channel.send({"text": "held"})
            return gate

        self.make_worker([route("x", consumer)], pool)
        self.send("x", {"reply_channel": REPLY})
        self.assertEqual((pool.pending, self.replies()), ([], []))
        gate.callback(None)
        self.assertEqual(self.replies(), [{"text": "held"}])

    def test_plain_consumer_returning_coroutine(self):
        """A plain function returning a coroutine has it finished on the reactor, sends in order."""
        async def later(message):
            message.reply_channel.send({"text": "second"})

        def consumer(message):
            message.reply_channel.send({"text": "first"})
            return later(message)

        self.make_worker([route("x", consumer)])
        self.send("x", {"reply_channel": REPLY})
        self.assertEqual(self.replies(), [{"text": "first"}, {"text": "second"}])

    def test_route_class_consumer(self):
        """A ``route_class`` class is instantiated with the message in the pool."""
        from chanserve.routing import route_class
        made = []

        class Consumer:
            @classmethod
            def channel_names(cls):
                return ["x"]

            def __init__(self, message, **kwargs):
                made.append((message.content["n"], kwargs))

        pool = ManualThreadPool()
        self.make_worker([route_class(Consumer, path=r"^/(?P<p>\w+)$")], pool)
        self.send("x", {"n": 1, "path": "/a"})
        pool.run_one()
        self.assertEqual(made, [(1, {"p": "a"})])

    def test_close_old_connections_around_each_call(self):
        """Django's close_old_connections runs before and after every thread consumer."""
        calls = []
        self.patch(_service, "_closer", lambda: calls.append("close"))

        def consumer(message):
            calls.append("consume")

        self.make_worker([route("x", consumer)])
        self.send("x", {})
        self.send("x", {})
        self.assertEqual(calls, ["close", "consume", "close"] * 2)

    def test_default_routes_without_project_routes(self):
        """With an empty routing, a WebSocket connect is accepted by the defaults."""
        self.make_worker([])
        self.send("websocket.connect", {"path": "/", "reply_channel": REPLY, "order": 0})
        self.send("websocket.receive", {"path": "/", "reply_channel": REPLY, "order": 1, "text": "x"})
        self.assertEqual(self.replies(), [{"accept": True}])


class ProtocolTests(WorkerTestMixin, SynchronousTestCase):
    """The implicit accept and the error replies agreed with the interface server."""

    def connect(self, consumer):
        self.make_worker([route("websocket.connect", consumer)])
        self.send("websocket.connect", {"path": "/", "reply_channel": REPLY, "order": 0})
        return self.replies()

    def test_implicit_accept_after_held_sends(self):
        """A connect consumer that neither accepts nor rejects: its sends, then an accept."""
        def consumer(message):
            Channel("elsewhere", channel_layer=message.channel_layer).send({"a": 1})
        self.assertEqual(self.connect(consumer), [{"accept": True}])
        self.assertEqual(self.successResultOf(self.layer.receive(["elsewhere"]))[1], {"a": 1})

    def test_explicit_accept_not_doubled(self):
        """A consumer that sent ``accept: True`` gets no second accept."""
        self.assertEqual(self.connect(lambda m: m.reply_channel.send({"accept": True})),
                         [{"accept": True}])

    def test_text_accepts(self):
        """A text frame from the connect consumer accepts; no extra accept is sent."""
        self.assertEqual(self.connect(lambda m: m.reply_channel.send({"text": "hi"})),
                         [{"text": "hi"}])

    def test_explicit_reject_not_overridden(self):
        """``accept: False`` or ``close`` from the consumer stays the answer."""
        self.assertEqual(self.connect(lambda m: m.reply_channel.send({"accept": False})),
                         [{"accept": False}])

    def test_close_rejects(self):
        """A ``close`` from the connect consumer is a reject; no accept follows."""
        self.assertEqual(self.connect(lambda m: m.reply_channel.send({"close": True})),
                         [{"close": True}])

    def test_deny_connection(self):
        """``DenyConnection`` sends ``accept: False`` after any held sends; it is no error."""
        def consumer(message):
            message.reply_channel.send({"text": "bye"})
            raise DenyConnection()
        self.assertEqual(self.connect(consumer), [{"text": "bye"}, {"accept": False}])
        self.assertEqual(self.flushLoggedErrors(DenyConnection), [])

    def test_connect_consumer_error(self):
        """Any other exception in a connect consumer: logged, and ``close: 1011``."""
        def consumer(message):
            raise ZeroDivisionError()
        self.assertEqual(self.connect(consumer), [{"close": 1011}])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.worker.statistics()["failed"], 1)

    def test_receive_consumer_error_closes_1011(self):
        """An exception in a websocket.receive consumer closes the socket with 1011."""
        def consumer(message):
            raise KeyError("x")
        self.make_worker([route("websocket.receive", consumer)])
        self.send("websocket.receive", {"path": "/", "reply_channel": REPLY, "text": "x"})
        self.assertEqual(self.replies(), [{"close": 1011}])
        self.flushLoggedErrors(KeyError)

    def test_deny_connection_outside_connect_is_an_error(self):
        """``DenyConnection`` from a receive consumer is a mistake: logged as an error, 1011."""
        def consumer(message):
            raise DenyConnection()
        self.make_worker([route("websocket.receive", consumer)])
        self.send("websocket.receive", {"path": "/", "reply_channel": REPLY, "text": "x"})
        self.assertEqual(self.replies(), [{"close": 1011}])
        self.assertEqual(len(self.flushLoggedErrors(DenyConnection)), 1)
        self.assertEqual(self.worker.statistics()["failed"], 1)

    def test_disconnect_consumer_error_sends_nothing(self):
        """An exception in a disconnect consumer is logged; nothing goes to the gone socket."""
        def consumer(message):
            raise KeyError("x")
        self.make_worker([route("websocket.disconnect", consumer)])
        self.send("websocket.disconnect", {"path": "/", "reply_channel": REPLY, "code": 1000})
        self.assertEqual(self.replies(), [])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_http_error_500(self):
        """An exception in an http.request consumer gets the client a 500."""
        def consumer(message):
            raise ValueError("boom")
        self.make_worker([route("http.request", consumer)])
        self.send("http.request", {"path": "/", "reply_channel": REPLY, "method": "GET"})
        [reply] = self.replies()
        self.assertEqual(reply["status"], 500)
        self.assertEqual(reply["content"], b"Internal Server Error")
        self.assertFalse(reply["more_content"])
        self.flushLoggedErrors(ValueError)

    def test_http_error_after_response_started(self):
        """No 500 when the consumer's held sends already started a response: it is cut short."""
        def consumer(message):
            message.reply_channel.send({"status": 200, "headers": [], "content": b"a",
                                        "more_content": True})
            raise ValueError("boom")
        self.make_worker([route("http.request", consumer)])
        self.send("http.request", {"path": "/", "reply_channel": REPLY, "method": "GET"})
        replies = self.replies()
        self.assertEqual([r.get("status") for r in replies], [200, None])
        self.assertEqual(replies[1], {"more_content": False, "abort": True})
        self.flushLoggedErrors(ValueError)

    def test_http_error_after_response_finished(self):
        """Nothing more when the consumer's held sends finished the response before it raised."""
        def consumer(message):
            message.reply_channel.send({"status": 200, "headers": [], "content": b"a",
                                        "more_content": True})
            message.reply_channel.send({"content": b"b"})
            raise ValueError("boom")
        self.make_worker([route("http.request", consumer)])
        self.send("http.request", {"path": "/", "reply_channel": REPLY, "method": "GET"})
        self.assertEqual([r.get("content") for r in self.replies()], [b"a", b"b"])
        self.flushLoggedErrors(ValueError)

    def test_worker_survives_errors(self):
        """After a consumer raises, the next message is still consumed."""
        results = []

        def consumer(message):
            if message.content["n"] == 0:
                raise RuntimeError("first")
            results.append(message.content["n"])

        self.make_worker([route("x", consumer)])
        for n in range(3):
            self.send("x", {"n": n})
        self.assertEqual(results, [1, 2])
        self.flushLoggedErrors(RuntimeError)

    def test_failed_flush_logged(self):
        """A held send that fails (channel full) is logged and counted; the worker goes on."""
        def consumer(message):
            Channel("tiny", channel_layer=message.channel_layer).send({"a": 1})

        self.make_worker([route("x", consumer)])
        self.layer.capacity.default = 1
        self.send("x", {})
        self.send("x", {})
        self.assertEqual(self.worker.statistics()["send_failures"], 1)


class ConsumeLaterTests(WorkerTestMixin, SynchronousTestCase):
    """``ConsumeLater`` requeues with a delay and a retry limit."""

    def test_requeued_after_delay(self):
        """The message goes back on its channel after a delay, with ``__retries__``; held sends are dropped."""
        attempts = []

        def consumer(message):
            attempts.append(message.content.get("__retries__", 0))
            if len(attempts) < 3:
                message.reply_channel.send({"text": "dropped"})
                raise ConsumeLater()
            message.reply_channel.send({"text": "done"})

        self.make_worker([route("x", consumer)], retry_delay=0.25, retry_max_delay=2.0)
        self.send("x", {"reply_channel": REPLY})
        self.assertEqual(attempts, [0])
        self.clock.advance(0.125)
        self.assertEqual(attempts, [0])
        self.clock.advance(0.125)
        self.assertEqual(attempts, [0, 1])
        self.clock.advance(0.25)
        self.assertEqual(attempts, [0, 1])
        self.clock.advance(0.25)
        self.assertEqual(attempts, [0, 1, 2])
        self.assertEqual(self.replies(), [{"text": "done"}])
        self.assertEqual(self.worker.statistics()["consume_later"], 2)

    def test_dropped_after_limit(self):
        """After ``retry_limit`` requeues the message is dropped, logged and counted."""
        attempts = []

        def consumer(message):
            attempts.append(1)
            raise ConsumeLater()

        self.make_worker([route("x", consumer)], retry_limit=3, retry_delay=0.01, retry_max_delay=0.02)
        self.send("x", {})
        self.clock.pump([0.05] * 10)
        self.assertEqual(len(attempts), 4)
        self.assertEqual(self.worker.statistics()["retries_exhausted"], 1)
        self.assertEqual(self.worker.statistics()["waiting_retries"], 0)

    def test_stop_sends_waiting_retries_now(self):
        """Stopping the worker puts waiting retries back on the layer at once."""
        def consumer(message):
            raise ConsumeLater()

        self.make_worker([route("x", consumer)], retry_delay=5)
        self.send("x", {"n": 1})
        self.assertEqual(self.worker.statistics()["waiting_retries"], 1)
        self.successResultOf(self.worker.stopService())
        stats = self.successResultOf(self.layer.statistics())
        self.assertEqual(stats["queue_depth"], {"x": 1})


    def test_consume_later_while_stopping(self):
        """A consumer raising ConsumeLater while the worker stops has its message put back at once."""
        pool = ManualThreadPool()

        def consumer(message):
            raise ConsumeLater()

        self.make_worker([route("x", consumer)], pool, retry_delay=5)
        self.send("x", {"n": 1})
        d = self.worker.stopService()
        pool.run_one()
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"], {"x": 1})


class FlowTests(WorkerTestMixin, SynchronousTestCase):
    """Channel selection, backpressure, unroutable messages, receive errors and stopping."""

    def test_backpressure(self):
        """At most ``threads`` thread consumers run; the rest stay in the layer until a slot frees."""
        pool = ManualThreadPool()
        self.make_worker([route("x", lambda m: None)], pool, threads=2)
        for n in range(5):
            self.send("x", {"n": n})
        self.assertEqual(len(pool.pending), 2)
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"], {"x": 3})
        pool.run_one()
        self.assertEqual(len(pool.pending), 2)
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"], {"x": 2})
        pool.run_all()
        self.assertEqual(self.worker.statistics()["consumed"], 5)

    def test_async_limit(self):
        """At most ``max_async`` reactor consumers run at once."""
        gates = []

        async def consumer(message):
            d = defer.Deferred()
            gates.append(d)
            await d

        self.make_worker([route("x", consumer)], max_async=2)
        for n in range(3):
            self.send("x", {"n": n})
        self.assertEqual(len(gates), 2)
        gates[0].callback(None)
        self.assertEqual(len(gates), 3)
        for d in gates[1:]:
            d.callback(None)

    def test_only_and_exclude(self):
        """``only_channels`` and ``exclude_channels`` globs select the consumed channels."""
        routing = [route(["chat.a", "chat.b", "other"], lambda m: None)]
        self.assertEqual(select_channels(["chat.a", "chat.b", "other"], ["chat.*"], ["*.b"]),
                         ["chat.a"])
        self.make_worker(routing, only_channels=["chat.*"], exclude_channels=["*.b"])
        self.assertEqual(self.worker.channels, ["chat.a"])
        self.send("other", {})
        self.send("chat.b", {})
        self.send("chat.a", {})
        self.assertEqual(self.worker.statistics()["consumed"], 1)
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"],
                         {"other": 1, "chat.b": 1})

    def test_no_channels_idles(self):
        """A worker whose globs leave no channel starts, receives nothing and stops cleanly."""
        self.make_worker([route("x", lambda m: None)], only_channels=["nothing"])
        self.send("x", {})
        self.assertEqual(self.worker.statistics()["received"], 0)

    def test_unroutable_logged_once(self):
        """A message no route matches is dropped and counted; the warning is logged once per channel."""
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.make_worker([route("x", lambda m: None, path=r"^/only$")])
        for _ in range(3):
            self.send("x", {"path": "/other"})
        self.assertEqual(self.worker.statistics()["unroutable"], 3)
        warnings = [e for e in events if "No route matches" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["channel"], "x")

    def test_receive_error_retried_after_delay(self):
        """A failing layer receive is logged and retried after a delay, not in a busy loop."""
        self.make_worker([route("x", lambda m: None)], receive_error_delay=2.0)
        calls = []
        real = self.layer.receive

        def flaky(channels):
            calls.append(1)
            if len(calls) == 1:
                return defer.fail(RuntimeError("layer down"))
            return real(channels)

        # Restart the loop with the flaky receive.
        self.successResultOf(self.worker.stopService())
        self.layer.receive = flaky
        self.worker.startService()
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(1.9)
        self.assertEqual(len(calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(calls), 2)
        self.send("x", {})
        self.assertEqual(self.worker.statistics()["consumed"], 1)

    def test_stop_cancels_receive(self):
        """After stop, no message is taken from the layer."""
        self.make_worker([route("x", lambda m: None)])
        self.successResultOf(self.worker.stopService())
        self.send("x", {})
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"], {"x": 1})
        self.assertEqual(self.successResultOf(self.layer.statistics())["waiting_receivers"], 0)

    def test_stop_waits_for_running_consumers(self):
        """``stopService`` fires only once running consumers finished (and their sends went)."""
        pool = ManualThreadPool()
        self.make_worker([route("x", lambda m: m.reply_channel.send({"text": "bye"}))], pool)
        self.send("x", {"reply_channel": REPLY})
        d = self.worker.stopService()
        self.assertNoResult(d)
        pool.run_one()
        self.assertIs(self.successResultOf(d), None)
        self.assertEqual(self.replies(), [{"text": "bye"}])

    def test_stop_while_saturated(self):
        """Stopping while receive waits for a free thread: with a cross-process layer the
        queued message stays there for the next worker."""
        pool = ManualThreadPool()
        self.make_worker([route("x", lambda m: None)], pool, threads=1)
        self.layer.cross_process = True
        self.send("x", {"n": 1})
        self.send("x", {"n": 2})
        d = self.worker.stopService()
        pool.run_all()
        self.successResultOf(d)
        self.assertEqual(self.worker.statistics()["consumed"], 1)
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"], {"x": 1})

    def test_stop_consumes_what_in_process_layer_holds(self):
        """With an in-process layer, what is queued at stop (the disconnects the interface's
        stop just sent) is consumed before the stop fires, more than the threads at once."""
        pool = ManualThreadPool()
        seen = []
        self.make_worker([route("websocket.disconnect", lambda m: seen.append(m["n"]))],
                         pool, threads=1)
        for n in range(5):
            self.send("websocket.disconnect", {"n": n})
        d = self.worker.stopService()
        self.assertNoResult(d)
        pool.run_all()
        self.successResultOf(d)
        self.assertEqual(seen, [0, 1, 2, 3, 4])
        self.assertEqual(self.successResultOf(self.layer.statistics())["queue_depth"], {})

    def test_stop_dispatch_once_despite_consume_later(self):
        """A consumer putting its message back while the stop drains does not loop."""
        calls = []

        def consumer(message):
            calls.append(1)
            raise ConsumeLater()

        self.make_worker([route("x", consumer)], ManualThreadPool(), threads=1)
        self.send("x", {})
        self.send("x", {})
        d = self.worker.stopService()
        self.pool.run_all()
        self.successResultOf(d)
        self.assertEqual(len(calls), 2)

    def test_restart(self):
        """A stopped worker can be started again and consumes again."""
        self.make_worker([route("x", lambda m: None)])
        self.successResultOf(self.worker.stopService())
        self.worker.startService()
        self.send("x", {})
        self.assertEqual(self.worker.statistics()["consumed"], 1)

    def test_stop_deadline(self):
        """A consumer still running at ``stop_timeout`` is not waited for."""
        pool = ManualThreadPool()
        self.make_worker([route("x", lambda m: None)], pool, stop_timeout=5)
        self.send("x", {})
        d = self.worker.stopService()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.successResultOf(d)
        pool.run_all()

    def test_consumer_kinds(self):
        """``runs_on_reactor``: async def, async __call__, partials of async, marked functions."""
        async def coro(message):
            pass

        def plain(message):
            pass

        class AsyncCallable:
            async def __call__(self, message):
                pass

        class ConsumerClass:
            def __init__(self, message):
                pass

        self.assertTrue(runs_on_reactor(coro))
        self.assertTrue(runs_on_reactor(partial(coro)))
        self.assertTrue(runs_on_reactor(AsyncCallable()))
        self.assertTrue(runs_on_reactor(reactor_consumer(lambda m: None)))
        self.assertFalse(runs_on_reactor(plain))
        self.assertFalse(runs_on_reactor(ConsumerClass))
        self.assertFalse(runs_on_reactor(partial(plain)))

    def test_deferred_consumer_kinds(self):
        """``@inlineCallbacks`` and ``-> Deferred`` functions run on the reactor; other wrappers don't."""
        import functools

        @defer.inlineCallbacks
        def inline(message):
            yield defer.succeed(None)

        def annotated(message) -> defer.Deferred:
            return defer.succeed(None)

        def annotated_str(message) -> "defer.Deferred[None]":
            return defer.succeed(None)

        def plain(message) -> None:
            pass

        @functools.wraps(plain)
        def wrapper(message):
            return plain(message)

        self.assertTrue(runs_on_reactor(inline))
        self.assertTrue(runs_on_reactor(partial(inline)))
        self.assertTrue(runs_on_reactor(annotated))
        self.assertTrue(runs_on_reactor(annotated_str))
        self.assertFalse(runs_on_reactor(plain))
        self.assertFalse(runs_on_reactor(wrapper))

    def test_inline_callbacks_consumer(self):
        """An ``@inlineCallbacks`` consumer runs on the reactor; its sends wait for its end."""
        pool = ManualThreadPool()
        gate = defer.Deferred()

        @defer.inlineCallbacks
        def consumer(message):
            message.reply_channel.send({"text": "1"})
            yield gate
            message.reply_channel.send({"text": "2"})

        self.make_worker([route("x", consumer)], pool)
        self.send("x", {"reply_channel": REPLY})
        self.assertEqual((pool.pending, self.replies()), ([], []))
        gate.callback(None)
        self.assertEqual(self.replies(), [{"text": "1"}, {"text": "2"}])


class RealThreadPoolTests(TestCase):
    """The worker with a real ``ThreadPool`` and the real reactor."""

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.layer = InMemoryChannelLayer(reactor=reactor)
        self.layer.startService()
        self.addCleanup(self.layer.stopService)

    @defer.inlineCallbacks
    def test_consumers_in_threads(self):
        """Plain consumers run in pool threads; Group.add and held sends work from there."""
        threads = set()
        main = threading.current_thread()

        def ws_add(message):
            threads.add(threading.current_thread())
            Group("chat", channel_layer=message.channel_layer).add(message.reply_channel)

        def ws_message(message):
            threads.add(threading.current_thread())
            Group("chat", channel_layer=message.channel_layer).send(
                {"text": "[user] %s" % message.content["text"]})

        worker = WorkerService(self.layer, self.reactor, Router(
            [route("websocket.connect", ws_add), route("websocket.receive", ws_message)]), threads=2)
        worker.startService()
        try:
            yield self.layer.send("websocket.connect", {"path": "/", "reply_channel": REPLY, "order": 0})
            _, accept = yield self.layer.receive(["chanserve.test!"])
            self.assertEqual(accept, {"accept": True})
            yield self.layer.send("websocket.receive", {"path": "/", "reply_channel": REPLY,
                                                       "order": 1, "text": "hi"})
            _, reply = yield self.layer.receive(["chanserve.test!"])
            self.assertEqual(reply, {"text": "[user] hi"})
        finally:
            yield worker.stopService()
        self.assertNotIn(main, threads)
        self.assertTrue(threads)
        self.assertIsNone(worker.threadpool)

    @defer.inlineCallbacks
    def test_concurrency_bounded_and_contexts_separate(self):
        """With 3 threads at most 3 consumers overlap, and each call's held sends stay its own."""
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        release = threading.Event()

        def consumer(message):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            message.reply_channel.send({"n": message.content["n"]})
            release.wait(5)
            with lock:
                state["now"] -= 1

        pool = ThreadPool(0, 10, name="test-worker")
        pool.start()
        self.addCleanup(pool.stop)
        worker = WorkerService(self.layer, self.reactor, [route("x", consumer)], threads=3,
                               threadpool=pool)
        worker.startService()
        try:
            for n in range(6):
                yield self.layer.send("x", {"n": n, "reply_channel": f"chanserve.test!c{n}"})
            yield task.deferLater(self.reactor, 0.2, lambda: None)
            self.assertEqual(worker.statistics()["running_in_threads"], 3)
            yield deferToThread(release.set)
            got = []
            for _ in range(6):
                channel, content = yield self.layer.receive(["chanserve.test!"])
                got.append((channel, content["n"]))
        finally:
            release.set()
            yield worker.stopService()
        self.assertEqual(state["peak"], 3)
        self.assertEqual(sorted(got), [(f"chanserve.test!c{n}", n) for n in range(6)])

    @defer.inlineCallbacks
    def test_orm_in_thread_consumers(self):
        """Plain consumers may use the Django ORM; connections are closed around each call."""
        from django.contrib.sessions.models import Session
        from django.db import close_old_connections, connections

        from tests.project import ensure_database
        yield deferToThread(ensure_database)
        closed = []

        def closer():
            closed.append(threading.current_thread())
            close_old_connections()
        self.patch(_service, "_closer", closer)

        def consumer(message):
            from django.utils import timezone
            Session.objects.update_or_create(
                session_key=f"worker-orm-{message.content['n']}",
                defaults={"session_data": "x", "expire_date": timezone.now()})
            message.reply_channel.send({"count": Session.objects.filter(
                session_key__startswith="worker-orm-").count()})

        worker = WorkerService(self.layer, self.reactor, [route("x", consumer)], threads=2)
        worker.startService()
        try:
            counts = []
            for n in range(3):
                yield self.layer.send("x", {"n": n, "reply_channel": REPLY})
                _, reply = yield self.layer.receive(["chanserve.test!"])
                counts.append(reply["count"])
        finally:
            yield worker.stopService()
            yield deferToThread(lambda: Session.objects.filter(
                session_key__startswith="worker-orm-").delete())
            yield deferToThread(connections.close_all)
        self.assertEqual(counts, [1, 2, 3])
        self.assertEqual(len(closed), 6)
        self.assertNotIn(threading.main_thread(), closed)
