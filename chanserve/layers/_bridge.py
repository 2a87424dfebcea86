"""Calling a layer from any thread, or from a process with no running reactor."""

import queue
import threading

from twisted.internet import defer
from twisted.python import failure, threadable

_reactor_thread_lock = threading.Lock()
_reactor_threads = {}


def _result_of(d):
    """The result of an already-fired Deferred, raising its failure."""
    box = []
    d.addBoth(box.append)
    result = box[0]
    if isinstance(result, failure.Failure):
        result.raiseException()
    return result


def blocking_call(reactor, function, *args):
    """
    ``blockingCallFromThread``, with a lighter hand-back.

    Twisted's builds a ``queue.Queue`` (a lock and three conditions) per
    call; a ``SimpleQueue`` does the one put and one get this needs. Every
    reply a Django view sends from a worker thread comes through here.
    """
    box = queue.SimpleQueue()

    def call():
        defer.maybeDeferred(function, *args).addBoth(box.put)

    reactor.callFromThread(call)
    result = box.get()
    if isinstance(result, failure.Failure):
        result.raiseException()
    return result


def _log_to_stdlib():
    """
    In a process where nothing collects Twisted's log (no ``twistd``), send
    it to Python's ``logging`` (logger ``chanserve``), so that what the layer
    reports (a dropped message, Redis unreachable) reaches Django's
    ``LOGGING``, or standard error for warnings when nothing is configured.
    """
    import warnings

    from twisted.logger import STDLibLogObserver, globalLogBeginner
    if getattr(globalLogBeginner, "_temporaryObserver", None) is not None:
        # beginLoggingTo takes over warnings.showwarning too: not ours to change.
        showwarning = warnings.showwarning
        globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="chanserve")],
                                         redirectStandardIO=False)
        warnings.showwarning = showwarning


def ensure_reactor_thread(reactor):
    """
    Run ``reactor`` in a daemon thread if nothing runs it yet.

    For processes that never start a reactor (a management command run by
    cron, a Django shell) but use a cross-process layer.
    """
    if getattr(reactor, "running", False):
        return
    with _reactor_thread_lock:
        if getattr(reactor, "running", False) or reactor in _reactor_threads:
            return
        _log_to_stdlib()
        started = threading.Event()
        reactor.callWhenRunning(started.set)
        thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False},
            name="chanserve-reactor", daemon=True)
        _reactor_threads[reactor] = thread
        thread.start()
    started.wait(30)


def call_layer(layer, method, *args):
    """
    Call ``layer.method(*args)`` from wherever we are.

    On the reactor thread: returns the layer's ``Deferred`` at once (never
    blocks). In any other thread: waits for the result and returns it, or
    raises the layer's exception (``ChannelFull``...) in the caller.
    """
    return call_for_layer(layer, getattr(layer, method), *args)


def call_for_layer(layer, function, *args):
    """
    Call ``function(*args)`` (which uses ``layer``) on the layer's reactor thread.

    The same rules as ``call_layer``: a ``Deferred`` on the reactor thread,
    the result (or the exception) anywhere else.
    """
    if threadable.isInIOThread():
        return function(*args)
    reactor = layer.reactor
    if not getattr(reactor, "running", False):
        if not layer.cross_process:
            # Nothing else can touch an in-memory layer without a reactor:
            # its methods complete synchronously.
            d = function(*args)
            if isinstance(d, defer.Deferred):
                return _result_of(d)
            return d
        ensure_reactor_thread(reactor)
    return blocking_call(reactor, function, *args)


def receive_now(layer, channels):
    """
    The ``(channel, message)`` waiting on one of ``channels`` now, or None:
    a receive that would wait is cancelled. For a layer that answers at
    once when a message is there (the in-memory one); a failed receive
    raises.
    """
    d = layer.receive(channels)
    box = []
    d.addBoth(box.append)
    if not box:
        d.cancel()  # its CancelledError lands in the box, handled
        return None
    if isinstance(box[0], failure.Failure):
        box[0].raiseException()
    return box[0]
