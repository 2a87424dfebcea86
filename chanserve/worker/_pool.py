"""
``WorkerPool``: a small fixed-size pool of daemon threads fed by a
``queue.SimpleQueue``. Results go back through a deque drained on the
reactor: a thread calls ``reactor.callFromThread`` (waking the reactor) only
when no drain is pending already, so results finishing together share one
wake-up. Cheaper per call than Twisted's ``ThreadPool`` (no ``Condition`` /
worker bookkeeping under locks).
"""

import collections
import contextvars
import queue
import threading

from twisted.internet import defer
from twisted.python import failure

_STOP = object()


class WorkerPool:
    """
    At most ``size`` daemon threads running calls submitted from the reactor
    thread. ``submit`` returns a ``Deferred`` fired on ``reactor`` (through
    ``callFromThread``) with the call's result or a ``Failure``. Each call
    runs in a copy of the submitter's ``contextvars`` context. Threads are
    started lazily, when every started thread is busy.

    All methods must be called on the reactor thread.
    """

    def __init__(self, reactor, size, name="chanserve-worker"):
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size!r}")
        self.reactor = reactor
        self.size = size
        self.name = name
        self._queue = queue.SimpleQueue()
        self._threads = []
        self._in_flight = 0
        self._stopped = False
        self._results = collections.deque()
        self._drain_pending = False

    @property
    def in_flight(self):
        """Calls submitted whose result the reactor has not received yet."""
        return self._in_flight

    @property
    def threads(self):
        """The threads started so far (a copy)."""
        return list(self._threads)

    def submit(self, f, *args, **kwargs):
        """Run ``f(*args, **kwargs)`` in a pool thread: a ``Deferred`` of its result."""
        if self._stopped:
            return defer.fail(RuntimeError("the worker pool is stopped"))
        if self._in_flight >= len(self._threads) and len(self._threads) < self.size:
            self._start_thread()
        d = defer.Deferred()
        self._in_flight += 1
        self._queue.put((d, contextvars.copy_context(), f, args, kwargs))
        return d

    def _start_thread(self):
        thread = threading.Thread(target=self._work, daemon=True,
                                  name=f"{self.name}-{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def _work(self):
        get = self._queue.get
        call_from_thread = self.reactor.callFromThread
        append = self._results.append
        drain = self._drain
        while True:
            item = get()
            if item is _STOP:
                return
            d, ctx, f, args, kwargs = item
            del item
            try:
                result, ok = ctx.run(f, *args, **kwargs), True
            except BaseException:
                result, ok = failure.Failure(), False
            append((d, ok, result))
            del d, ctx, f, args, kwargs, result
            # Safe without a lock: _drain clears the flag before it empties
            # the deque, so a result appended before we saw True is drained.
            if not self._drain_pending:
                self._drain_pending = True
                call_from_thread(drain)

    def _drain(self):
        self._drain_pending = False
        popleft = self._results.popleft
        while True:
            try:
                d, ok, result = popleft()
            except IndexError:
                return
            self._in_flight -= 1
            if ok:
                d.callback(result)
            else:
                d.errback(result)

    def stop(self):
        """
        Stop every thread. When no call is in flight the (idle) threads are
        joined and this returns True; otherwise the threads are told to exit
        once their current call returns and are not waited for (they are
        daemon threads: a stuck call can't hang the process's exit), and
        this returns False. Calls not yet picked up by a thread fail with
        ``CancelledError``.
        """
        if self._stopped:
            return True
        self._stopped = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._in_flight -= 1
            item[0].errback(defer.CancelledError())
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        if self._in_flight:
            return False
        for thread in threads:
            thread.join()
        return True
