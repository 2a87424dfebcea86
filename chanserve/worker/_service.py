"""
``WorkerService``: one receive loop over the routed channels; each message
runs its consumer in a bounded thread pool (plain functions) or on the
reactor (``async def`` and ``@reactor_consumer``), with its sends held and
flushed in order when it finishes.
"""

import contextvars
import fnmatch
import functools
import inspect
import itertools

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import failure

from ..channel import HeldSends, Message, holding_sends
from ..exceptions import ConsumeLater, DenyConnection
from ..layers._bridge import receive_now
from ..routing import Router
from . import _protocol
from ._pool import WorkerPool


def reactor_consumer(consumer):
    """
    Mark a plain function that returns a ``Deferred`` (or a coroutine) so the
    worker runs it on the reactor instead of in the thread pool. ``async def``
    consumers need no mark.
    """
    consumer.chanserve_reactor = True
    return consumer


def runs_on_reactor(consumer):
    """
    Whether the worker runs ``consumer`` on the reactor.

    On the reactor: ``async def`` functions (also through
    ``functools.partial``), callables whose ``__call__`` is ``async def``,
    ``@defer.inlineCallbacks`` functions, functions annotated
    ``-> Deferred``, and anything marked ``@reactor_consumer``. Everything
    else (plain functions, ``route_class`` classes) runs in the thread pool.
    """
    if getattr(consumer, "chanserve_reactor", False):
        return True
    if inspect.iscoroutinefunction(consumer):
        return True
    if inspect.isclass(consumer):
        return False
    if not inspect.isroutine(consumer) and not isinstance(consumer, functools.partial):
        return inspect.iscoroutinefunction(getattr(consumer, "__call__", None))
    function = consumer.func if isinstance(consumer, functools.partial) else consumer
    # @inlineCallbacks: a wrapper (not itself a generator) around a generator function.
    if (getattr(function, "__wrapped__", None) is not None
            and not inspect.isgeneratorfunction(function)
            and inspect.isgeneratorfunction(inspect.unwrap(function))):
        return True
    returns = getattr(function, "__annotations__", {}).get("return")
    return returns is defer.Deferred or (
        isinstance(returns, str) and returns.split("[")[0].rpartition(".")[2] == "Deferred")


def select_channels(channels, only=(), exclude=()):
    """``channels`` kept by the ``only`` globs (if any) and not dropped by ``exclude``."""
    kept = []
    for name in channels:
        if only and not any(fnmatch.fnmatchcase(name, g) for g in only):
            continue
        if any(fnmatch.fnmatchcase(name, g) for g in exclude):
            continue
        kept.append(name)
    return kept


def _consumer_name(consumer):
    module = getattr(consumer, "__module__", None)
    name = getattr(consumer, "__qualname__", None) or getattr(consumer, "__name__", None)
    if name is None:
        return repr(consumer)
    return f"{module}.{name}" if module else name


_closer = None


def _close_old_connections():
    """Django's ``close_old_connections`` when Django is configured (else nothing)."""
    global _closer
    if _closer is None:
        closer = None
        try:
            from django.conf import settings
            if settings.configured:
                from django.db import close_old_connections as closer
        except ImportError:
            pass
        _closer = closer or (lambda: None)
    _closer()


def _call_in_thread(consumer, message, kwargs):
    """Run a plain consumer (in a pool thread): ``(held, result, failure)``, never raises."""
    held = HeldSends()
    try:
        _close_old_connections()
        try:
            with holding_sends() as held:
                result = consumer(message, **kwargs)
            return held, result, None
        finally:
            _close_old_connections()
    except Exception:
        return held, None, failure.Failure()


class WorkerService(service.Service):
    """
    Receive messages on every routed channel and run their consumers.

    ``routing`` is a ``chanserve.routing.Router`` or a routing list (the
    default routes are appended to a list). ``only_channels`` /
    ``exclude_channels`` are globs selecting which routed channels this
    worker consumes. At most ``threads`` plain consumers run at once (in
    ``threadpool``, a Twisted ``ThreadPool`` or anything with its
    ``callInThreadWithCallback``, or else in a ``WorkerPool`` of daemon
    threads of that size the service starts and stops) and
    at most ``max_async`` reactor consumers; receiving pauses while either
    is saturated.

    A consumer raising ``ConsumeLater`` has its message sent back to its
    channel after a short, growing delay, up to ``retry_limit`` times.
    ``stopService`` stops receiving and waits up to ``stop_timeout``
    seconds (0: as long as they take) for running consumers.
    """

    _log = Logger()
    name = "worker"

    def __init__(self, layer, reactor, routing, *, threads=10, only_channels=(),
                 exclude_channels=(), threadpool=None, max_async=1000, stop_timeout=10.0,
                 retry_limit=10, retry_delay=0.01, retry_max_delay=1.0,
                 receive_error_delay=1.0):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads!r}")
        self.layer = layer
        self.reactor = reactor
        self.router = routing if isinstance(routing, Router) else Router(routing)
        self.threads = threads
        self.channels = select_channels(self.router.channels, only_channels, exclude_channels)
        self.max_async = max_async
        self.stop_timeout = stop_timeout
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.receive_error_delay = receive_error_delay
        self.threadpool = threadpool
        self._own_pool = threadpool is None
        self._sync_running = 0
        self._async_running = 0
        self._slot = None
        self._loop = None
        self._stopping = False
        self._drain_waiters = []
        self._requeues = {}
        self._requeue_ids = itertools.count()
        self._unroutable_logged = set()
        self._on_reactor = {}
        self._stats = dict.fromkeys(
            ("received", "consumed", "failed", "consume_later", "retries_exhausted",
             "unroutable", "send_failures"), 0)

    # -- service -------------------------------------------------------------

    def startService(self):
        super().startService()
        self._stopping = False
        if self._own_pool:
            self.threadpool = WorkerPool(self.reactor, self.threads, name="chanserve-worker")
        if not self.channels:
            self._log.warn("Worker has no channels to consume (routing: {count} routes; "
                           "check --only-channels/--exclude-channels)",
                           count=len(self.router.routes))
            return
        self._log.info("Worker consuming {channels} with {threads} threads",
                       channels=", ".join(self.channels), threads=self.threads)
        self._loop = defer.Deferred.fromCoroutine(self._receive_loop())
        self._loop.addErrback(self._loop_ended)

    def stopService(self):
        super().stopService()
        self._stopping = True
        if self._loop is not None:
            loop, self._loop = self._loop, None
            loop.cancel()
        self._slot = None
        for entry in list(self._requeues.values()):
            entry[0].cancel()
            self._requeue(entry[3])
        if self.channels and not getattr(self.layer, "cross_process", True):
            self._dispatch_queued()
        d = self._drained(self.stop_timeout)
        d.addCallback(self._stop_pool)
        return d

    def _dispatch_queued(self):
        """
        Consume what waits for this worker in an in-process layer, which
        goes with the process: the ``websocket.disconnect`` messages the
        interface server's stop just sent, say. The stop waits for them as
        for running consumers (up to ``stop_timeout``). A cross-process
        layer keeps its messages for the next worker instead.
        """
        channels = list(self.channels)
        queued = []
        while True:
            try:
                item = receive_now(self.layer, channels)
            except Exception:
                self._log.failure("Worker stop: could not take what was queued")
                break
            if item is None:
                break
            queued.append(item)
        # Taken first, then dispatched: a consumer putting its message back
        # (ConsumeLater) must not make this loop forever.
        for channel, content in queued:
            self._dispatch(channel, content)

    def _loop_ended(self, f):
        if not f.check(defer.CancelledError):
            self._log.failure("Worker receive loop failed; the worker stopped consuming", f)

    def _stop_pool(self, drained):
        if not self._own_pool or self.threadpool is None:
            return
        pool, self.threadpool = self.threadpool, None
        # Idle threads are joined; daemon threads stuck in consumers past the
        # deadline are abandoned (they exit when their consumer returns).
        pool.stop()

    def _drained(self, timeout):
        """Fires with True when no consumer runs, or False after ``timeout``."""
        if not self._sync_running and not self._async_running:
            return defer.succeed(True)
        d = defer.Deferred()
        self._drain_waiters.append(d)

        def timed_out(result, timeout):
            self._log.warn(
                "Worker stop: {sync} thread and {async_} reactor consumers still running "
                "after {timeout}s; not waiting for them",
                sync=self._sync_running, async_=self._async_running, timeout=timeout)
            return False

        if timeout:
            d.addTimeout(timeout, self.reactor, onTimeoutCancel=timed_out)
        return d

    def statistics(self):
        """A dict of counters, plus the consumers running now."""
        stats = dict(self._stats)
        stats["running_in_threads"] = self._sync_running
        stats["running_on_reactor"] = self._async_running
        stats["waiting_retries"] = len(self._requeues)
        return stats

    # -- receiving -----------------------------------------------------------

    def _saturated(self):
        return self._sync_running >= self.threads or self._async_running >= self.max_async

    async def _receive_loop(self):
        channels = list(self.channels)
        while True:
            while self._saturated():
                self._slot = defer.Deferred()
                await self._slot
            try:
                channel, content = await self.layer.receive(channels)
            except defer.CancelledError:
                raise
            except Exception:
                self._log.failure(
                    "Worker could not receive from the channel layer; retrying in {delay}s",
                    delay=self.receive_error_delay)
                await task.deferLater(self.reactor, self.receive_error_delay)
                continue
            self._dispatch(channel, content)

    def _slot_freed(self):
        if self._slot is not None and not self._saturated():
            d, self._slot = self._slot, None
            if not d.called:
                d.callback(None)
        if not self._sync_running and not self._async_running and self._drain_waiters:
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(True)

    # -- dispatching ---------------------------------------------------------

    def _dispatch(self, channel, content):
        self._stats["received"] += 1
        try:
            matched = self.router.match(channel, content)
        except Exception:
            self._log.failure("Routing a message on {channel} failed; dropping it",
                              channel=channel)
            return
        if matched is None:
            self._unroutable(channel)
            return
        consumer, kwargs = matched
        message = Message(content, channel, self.layer)
        if self._is_reactor_consumer(consumer):
            self._async_running += 1
            d = defer.Deferred.fromCoroutine(
                self._consume_on_reactor(channel, consumer, message, kwargs))
            d.addBoth(self._done_on_reactor, channel)
        else:
            self._sync_running += 1
            if self._own_pool:
                # WorkerPool.submit runs the call in a copy of this context.
                d = self.threadpool.submit(_call_in_thread, consumer, message, kwargs)
            else:
                ctx = contextvars.copy_context()
                d = deferToThreadPool(self.reactor, self.threadpool, ctx.run,
                                      _call_in_thread, consumer, message, kwargs)
            d.addCallbacks(self._after_thread, self._thread_failed,
                           (channel, consumer, message), None, (channel, consumer, message))
            d.addBoth(self._done_in_thread, channel)

    def _is_reactor_consumer(self, consumer):
        try:
            return self._on_reactor[consumer]
        except KeyError:
            result = self._on_reactor[consumer] = runs_on_reactor(consumer)
            return result
        except TypeError:
            return runs_on_reactor(consumer)

    async def _consume_on_reactor(self, channel, consumer, message, kwargs):
        """Run a reactor consumer and finish its message (one coroutine, no callback chain)."""
        held = HeldSends()
        fail = None
        try:
            with holding_sends() as held:
                result = consumer(message, **kwargs)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            fail = failure.Failure()
        waiting = self._finish(held, fail, channel, message, consumer)
        if waiting is not None:
            await waiting

    def _after_thread(self, outcome, channel, consumer, message):
        held, result, fail = outcome
        if fail is None and inspect.isawaitable(result):
            # A plain consumer returned a coroutine or Deferred: finish it here.
            return defer.Deferred.fromCoroutine(
                self._await_result(held, result, channel, consumer, message))
        return self._finish(held, fail, channel, message, consumer)

    def _thread_failed(self, f, channel, consumer, message):
        return self._finish(HeldSends(), f, channel, message, consumer)

    async def _await_result(self, held, result, channel, consumer, message):
        more = HeldSends()
        fail = None
        try:
            with holding_sends() as more:
                await result
        except Exception:
            fail = failure.Failure()
        for send in more:
            held.add(*send)
        waiting = self._finish(held, fail, channel, message, consumer)
        if waiting is not None:
            await waiting

    def _done_on_reactor(self, result, channel):
        self._async_running -= 1
        return self._done(result, channel)

    def _done_in_thread(self, result, channel):
        self._sync_running -= 1
        return self._done(result, channel)

    def _done(self, result, channel):
        if isinstance(result, failure.Failure):
            self._log.failure("Worker failed to finish a message on {channel}", result,
                              channel=channel)
        self._slot_freed()
        return None

    def _finish(self, held, fail, channel, message, consumer):
        """
        Deliver a finished consumer's held sends, in order, then the protocol
        replies (implicit accept, error replies). Returns ``None`` when all
        sends completed at once, else a Deferred that fires when they did.
        """
        if fail is not None:
            if fail.check(ConsumeLater):
                held.discard()
                self._stats["consume_later"] += 1
                self._consume_later(channel, message.content)
                return None
            if fail.check(DenyConnection) and channel == "websocket.connect":
                # The documented way to refuse a handshake: not a failure.
                self._stats["consumed"] += 1
                self._log.info("Consumer {consumer} refused a connection on {channel}",
                               consumer=_consumer_name(consumer), channel=channel)
            else:
                self._stats["failed"] += 1
                self._log.failure("Consumer {consumer} raised on a message on {channel}", fail,
                                  consumer=_consumer_name(consumer), channel=channel)
        else:
            self._stats["consumed"] += 1
        reply = message.reply_channel
        extra = None
        if reply is not None and (fail is not None or channel == "websocket.connect"):
            extra = _protocol.replies_after(channel, held, reply.name, fail)
        pending = held.send_all(self._send_failed, channel)
        if extra:
            if pending:
                return defer.DeferredList(pending).addCallback(
                    lambda _: self._send_extra(reply.name, extra, channel))
            return self._send_extra(reply.name, extra, channel)
        if pending:
            return defer.DeferredList(pending)
        return None

    def _send_extra(self, name, messages, channel):
        pending = None
        for content in messages:
            d = self.layer.send(name, content)
            d.addErrback(self._send_failed, channel)
            if not d.called:
                if pending is None:
                    pending = []
                pending.append(d)
        return defer.DeferredList(pending) if pending else None

    def _send_failed(self, f, channel):
        self._stats["send_failures"] += 1
        self._log.warn("A send made by the consumer of a message on {channel} failed: "
                       "{error}", channel=channel, error=f.getErrorMessage())

    def _unroutable(self, channel):
        self._stats["unroutable"] += 1
        key = channel.partition("!")[0]
        if key not in self._unroutable_logged and len(self._unroutable_logged) < 1000:
            self._unroutable_logged.add(key)
            self._log.warn("No route matches a message on {channel}; dropping it "
                           "(logged once per channel)", channel=channel)

    # -- ConsumeLater --------------------------------------------------------

    def _consume_later(self, channel, content):
        retries = content.get("__retries__", 0)
        if type(retries) is not int or retries < 0:
            retries = 0
        if retries >= self.retry_limit:
            self._stats["retries_exhausted"] += 1
            self._log.warn("Dropping a message on {channel}: its consumer raised ConsumeLater "
                           "{count} times", channel=channel, count=retries + 1)
            return
        content = dict(content)
        content["__retries__"] = retries + 1
        if self._stopping:
            # Stopping: put it back at once, for whoever consumes next.
            self.layer.send(channel, content).addErrback(self._requeue_failed, channel)
            return
        delay = min(self.retry_delay * (2 ** retries), self.retry_max_delay)
        key = next(self._requeue_ids)
        call = self.reactor.callLater(delay, self._requeue, key)
        self._requeues[key] = (call, channel, content, key)

    def _requeue(self, key):
        entry = self._requeues.pop(key, None)
        if entry is None:
            return
        _call, channel, content, _key = entry
        d = self.layer.send(channel, content)
        d.addErrback(self._requeue_failed, channel)

    def _requeue_failed(self, f, channel):
        self._stats["retries_exhausted"] += 1
        self._log.warn("Could not put a ConsumeLater message back on {channel}; it is lost: "
                       "{error}", channel=channel, error=f.getErrorMessage())
