"""Tests for ``chanserve.worker._pool.WorkerPool`` and the worker's use of it."""

import contextvars
import threading

from twisted.internet import defer, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chanserve.layers import InMemoryChannelLayer
from chanserve.routing import route
from chanserve.worker import WorkerService
from chanserve.worker._pool import WorkerPool

VAR = contextvars.ContextVar("test_worker_pool_var", default="unset")


def _alive(threads):
    """Those of ``threads`` still listed by ``threading.enumerate()``."""
    running = set(threading.enumerate())
    return [t for t in threads if t in running]


class WorkerPoolArgumentTests(SynchronousTestCase):
    """Construction and use outside a running pool."""

    def test_size_must_be_positive(self):
        """A pool of fewer than one thread is refused."""
        self.assertRaises(ValueError, WorkerPool, task.Clock(), 0)

    def test_no_threads_until_work(self):
        """Threads are started lazily: a new pool has none, and stopping it joins nothing."""
        pool = WorkerPool(task.Clock(), 4)
        self.assertEqual(pool.threads, [])
        self.assertTrue(pool.stop())

    def test_submit_after_stop_fails(self):
        """Work submitted to a stopped pool fails at once and starts no thread."""
        pool = WorkerPool(task.Clock(), 2)
        pool.stop()
        self.failureResultOf(pool.submit(lambda: 1), RuntimeError)
        self.assertEqual(pool.threads, [])


class WorkerPoolTests(TestCase):
    """The pool with real threads and the real reactor."""

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor

    def make_pool(self, size):
        pool = WorkerPool(self.reactor, size, name="test-pool")
        self.addCleanup(pool.stop)
        return pool

    @defer.inlineCallbacks
    def test_result_delivered_on_reactor_thread(self):
        """A call's return value fires its Deferred, on the reactor thread; the call ran in a pool thread."""
        pool = self.make_pool(2)
        where = []

        def work(a, b=0):
            where.append(threading.current_thread())
            return a + b

        fired_in = []
        d = pool.submit(work, 2, b=3)
        d.addCallback(lambda r: (fired_in.append(threading.current_thread()), r)[1])
        result = yield d
        self.assertEqual(result, 5)
        self.assertEqual(fired_in, [threading.current_thread()])
        self.assertIn(where[0], pool.threads)
        self.assertIsNot(where[0], threading.current_thread())
        self.assertTrue(where[0].daemon)
        self.assertEqual(pool.in_flight, 0)

    @defer.inlineCallbacks
    def test_exception_delivered_as_failure(self):
        """An exception raised by a call fails its Deferred with that exception; the thread survives."""
        pool = self.make_pool(1)

        def boom():
            raise ZeroDivisionError("nope")

        with self.assertRaises(ZeroDivisionError):
            yield pool.submit(boom)
        result = yield pool.submit(lambda: "after")
        self.assertEqual(result, "after")
        self.assertEqual(len(pool.threads), 1)

    @defer.inlineCallbacks
    def test_concurrency_bounded_by_size(self):
        """With size 3 and 7 blocking calls, at most 3 run at once and all complete."""
        pool = self.make_pool(3)
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        three_in = threading.Event()
        release = threading.Event()

        def work(n):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                if state["now"] == 3:
                    three_in.set()
            release.wait(10)
            with lock:
                state["now"] -= 1
            return n

        ds = [pool.submit(work, n) for n in range(7)]
        try:
            yield deferToThread(three_in.wait, 10)
            yield task.deferLater(self.reactor, 0.05, lambda: None)
            self.assertEqual(state["now"], 3)
            self.assertEqual(pool.in_flight, 7)
        finally:
            release.set()
        results = yield defer.gatherResults(ds)
        self.assertEqual(results, list(range(7)))
        self.assertEqual(state["peak"], 3)
        self.assertEqual(len(pool.threads), 3)

    @defer.inlineCallbacks
    def test_sequential_calls_reuse_one_thread(self):
        """Calls submitted one after another are served by a single thread (lazy start)."""
        pool = self.make_pool(5)
        seen = set()
        for _ in range(4):
            yield pool.submit(lambda: seen.add(threading.current_thread()))
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(pool.threads), 1)

    @defer.inlineCallbacks
    def test_stop_joins_idle_threads(self):
        """Stopping an idle pool joins its threads: none is left in threading.enumerate()."""
        pool = self.make_pool(3)
        release = threading.Event()
        ds = [pool.submit(release.wait, 10) for _ in range(3)]
        release.set()
        yield defer.gatherResults(ds)
        threads = pool.threads
        self.assertEqual(len(_alive(threads)), 3)
        self.assertTrue(pool.stop())
        self.assertEqual(_alive(threads), [])
        self.assertEqual(pool.threads, [])

    @defer.inlineCallbacks
    def test_stuck_thread_abandoned(self):
        """
        Stopping with calls still running returns at once without joining;
        the idle thread exits, and each stuck thread exits (its result still
        delivered) once its call returns.
        """
        pool = self.make_pool(3)
        release = threading.Event()
        self.addCleanup(release.set)
        starts = [threading.Event(), threading.Event()]
        stuck_in = []

        def stuck(n):
            stuck_in.append(threading.current_thread())
            starts[n].set()
            release.wait(10)
            return n

        stuck_ds = [pool.submit(stuck, n) for n in range(2)]
        for started in starts:
            yield deferToThread(started.wait, 10)
        yield pool.submit(lambda: None)  # a third thread, idle afterwards
        threads = pool.threads
        self.assertEqual(len(threads), 3)
        self.assertFalse(pool.stop())
        self.assertEqual(pool.threads, [])
        idle = [t for t in threads if t not in stuck_in]
        self.assertEqual(len(idle), 1)
        # The idle thread takes its stop marker and exits; the stuck ones don't.
        yield deferToThread(idle[0].join, 10)
        self.assertEqual(sorted(_alive(threads), key=id), sorted(stuck_in, key=id))
        self.assertFalse(release.is_set())
        release.set()
        self.assertEqual((yield defer.gatherResults(stuck_ds)), [0, 1])
        for thread in threads:
            yield deferToThread(thread.join, 10)
        self.assertEqual(_alive(threads), [])

    @defer.inlineCallbacks
    def test_queued_calls_cancelled_at_stop(self):
        """Calls still waiting for a thread when the pool stops fail with CancelledError."""
        pool = self.make_pool(1)
        started = threading.Event()
        release = threading.Event()
        self.addCleanup(release.set)

        def stuck():
            started.set()
            release.wait(10)
            return "done"

        stuck_d = pool.submit(stuck)
        yield deferToThread(started.wait, 10)
        queued = pool.submit(lambda: "never")
        threads = pool.threads
        self.assertFalse(pool.stop())
        self.failureResultOf(queued, defer.CancelledError)
        release.set()
        self.assertEqual((yield stuck_d), "done")
        yield deferToThread(threads[0].join, 10)
        self.assertEqual(_alive(threads), [])

    @defer.inlineCallbacks
    def test_context_isolation(self):
        """Each call sees a copy of the submitter's context; its changes stay its own."""
        pool = self.make_pool(1)
        submitter = contextvars.Context()
        submitter.run(VAR.set, "submitter")

        def change(value):
            before = VAR.get()
            VAR.set(value)
            return before, VAR.get()

        first = yield submitter.run(pool.submit, change, "first")
        submitter.run(VAR.set, "later")
        second = yield submitter.run(pool.submit, change, "second")
        self.assertEqual(first, ("submitter", "first"))
        self.assertEqual(second, ("later", "second"))
        self.assertEqual(submitter.run(VAR.get), "later")
        # Both ran in the one thread, whose own context is untouched too.
        self.assertEqual(len(pool.threads), 1)
        seen = yield pool.submit(VAR.get)
        self.assertEqual(seen, "unset")


class WorkerOwnPoolTests(TestCase):
    """The worker's own pool: threads stop with the service, stuck consumers are abandoned."""

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.layer = InMemoryChannelLayer(reactor=reactor)
        self.layer.startService()
        self.addCleanup(self.layer.stopService)

    @defer.inlineCallbacks
    def test_no_threads_left_after_stop(self):
        """After stopService no thread of the worker's pool remains."""
        seen = set()

        def consumer(message):
            seen.add(threading.current_thread())
            message.reply_channel.send({"n": message.content["n"]})

        worker = WorkerService(self.layer, self.reactor, [route("x", consumer)], threads=3)
        worker.startService()
        try:
            for n in range(5):
                yield self.layer.send("x", {"n": n, "reply_channel": f"chanserve.test!c{n}"})
            for _ in range(5):
                yield self.layer.receive(["chanserve.test!"])
            threads = worker.threadpool.threads
        finally:
            yield worker.stopService()
        self.assertTrue(seen)
        self.assertTrue(seen <= set(threads))
        self.assertEqual(_alive(threads), [])
        self.assertEqual(_alive(seen), [])
        self.assertEqual([t for t in threading.enumerate()
                          if t.name.startswith("chanserve-worker")], [])

    @defer.inlineCallbacks
    def test_stuck_consumer_abandoned_after_stop_timeout(self):
        """stopService gives up on a stuck consumer after stop_timeout and fires; its thread exits later."""
        started = threading.Event()
        release = threading.Event()
        self.addCleanup(release.set)
        where = []

        def consumer(message):
            where.append(threading.current_thread())
            started.set()
            release.wait(10)

        worker = WorkerService(self.layer, self.reactor, [route("x", consumer)], threads=2,
                               stop_timeout=0.1)
        worker.startService()
        yield self.layer.send("x", {"n": 1})
        yield deferToThread(started.wait, 10)
        yield worker.stopService()
        self.assertIsNone(worker.threadpool)
        self.assertEqual(_alive(where), where)
        release.set()
        yield deferToThread(where[0].join, 10)
        self.assertEqual(_alive(where), [])
        # The late result reached the reactor: the worker's counters settle.
        yield task.deferLater(self.reactor, 0, lambda: None)
        self.assertEqual(worker.statistics()["running_in_threads"], 0)
