"""
Tell systemd how a ``Type=notify`` chanserve is doing (the ``sd_notify`` protocol).

``SystemdNotifier`` is a small service that sends, on the unix datagram
socket named by ``$NOTIFY_SOCKET``:

- ``READY=1`` once its ``ready`` callable's Deferred fires (the interface
  server listens and the layer is connected);
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while the reactor runs, when
  systemd set ``WatchdogSec=``;
- ``STOPPING=1`` as soon as shutdown begins (add the notifier last to the
  ``MultiService``: it is stopped first);
- ``RELOADING=1`` then ``READY=1`` on ``SIGHUP`` (``systemctl reload``), which
  reloads nothing: code and settings change only on restart, and a restart
  keeps the socket-activated listening socket, so no connection is refused.

Without ``$NOTIFY_SOCKET`` (not run by systemd) it does nothing at all, and
leaves ``SIGHUP`` alone so closing a terminal still stops the server.
Socket activation itself (``$LISTEN_FDS``) is Twisted's ``systemd:`` endpoint.
"""

import os
import signal
import socket
import threading
import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["SystemdNotifier", "add_notifier", "notify_socket_address", "readiness",
           "watchdog_interval"]


def add_notifier(parent, reactor, layer=None, environ=None):
    """
    Under systemd (``$NOTIFY_SOCKET`` set), add a ``SystemdNotifier`` as the
    last child of ``parent``; returns it, or None when not under systemd.

    Ready means: every child's ``listening`` Deferred (the interface server)
    has fired, and ``layer.whenConnected()`` (the Redis layer) has fired.
    Being last, the notifier is stopped first, so ``STOPPING=1`` goes out
    as soon as shutdown begins.
    """
    environ = os.environ if environ is None else environ
    if notify_socket_address(environ) is None:
        return None

    def ready():
        waits = [getattr(child, "listening", None) for child in parent]
        when_connected = getattr(layer, "whenConnected", None)
        if when_connected is not None:
            waits.append(when_connected())
        return readiness(*waits)

    notifier = SystemdNotifier(reactor, environ, ready=ready)
    notifier.setServiceParent(parent)
    return notifier


def readiness(*deferreds):
    """
    A Deferred firing when every one of ``deferreds`` has fired (None entries skipped).

    It fails with the first failure. The given Deferreds' own results are left
    untouched, so they can be someone else's (e.g. ``InterfaceServer.listening``).
    """
    observed = []
    for d in deferreds:
        if d is None:
            continue
        mine = defer.Deferred()

        def pass_through(result, mine=mine):
            if isinstance(result, Failure):
                mine.errback(result)
            else:
                mine.callback(result)
            return result
        d.addBoth(pass_through)
        observed.append(mine)
    return defer.gatherResults(observed, consumeErrors=True).addErrback(
        lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)


def notify_socket_address(environ):
    """
    The address ``$NOTIFY_SOCKET`` names, ready for ``socket.sendto``, or None.

    A leading ``@`` names a socket in the abstract namespace.
    """
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    if not path.startswith("/"):
        return None
    return path


def watchdog_interval(environ, pid=None):
    """
    Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None.

    None when the watchdog is off, malformed, or meant for another process
    (``$WATCHDOG_PID``).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(os.getpid() if pid is None else pid):
        return None
    return usec / 2 / 1e6


class SystemdNotifier(service.Service):
    """
    Report readiness, liveness and shutdown to systemd (see the module docstring).

    @param reactor: schedules the watchdog pings (an ``IReactorTime``); on
        ``SIGHUP`` the reload runs via its ``callFromThread``.
    @param environ: where ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` are read
        (default ``os.environ``).
    @param ready: a callable taking no argument, called when the service
        starts, whose result (a value or a Deferred) says the server is ready.
        None means ready as soon as the service starts.
    @param handle_reload: install a ``SIGHUP`` handler while running under
        systemd (the ``ExecReload=`` of ``contrib/systemd/chanserve.service``).
    """

    name = "systemd-notify"
    _log = Logger()

    def __init__(self, reactor, environ=None, ready=None, handle_reload=True):
        self._reactor = reactor
        self._environ = os.environ if environ is None else environ
        self._ready = ready
        self._handle_reload = handle_reload
        self._address = None
        self._socket = None
        self._watchdog = None
        self._previous_sighup = None
        self._sighup_installed = False
        self.is_ready = False

    @property
    def enabled(self):
        """True when systemd is listening (``$NOTIFY_SOCKET`` is set)."""
        return notify_socket_address(self._environ) is not None

    def startService(self):
        super().startService()
        self._address = notify_socket_address(self._environ)
        if self._address is None:
            return
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)
        interval = watchdog_interval(self._environ)
        if interval is not None:
            self._watchdog = task.LoopingCall(self.notify, "WATCHDOG=1")
            self._watchdog.clock = self._reactor
            self._watchdog.start(interval, now=True)
        if self._handle_reload:
            if threading.current_thread() is threading.main_thread():
                self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
                self._sighup_installed = True
            else:
                self._log.warn("Not in the main thread: SIGHUP (systemctl reload) is not handled")
        d = defer.maybeDeferred(self._ready) if self._ready is not None else defer.succeed(None)
        d.addCallbacks(self._became_ready, self._not_ready)

    def stopService(self):
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        if self._sighup_installed:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._sighup_installed = False
        if self._socket is not None:
            self.notify("STOPPING=1", "STATUS=Stopping")
            self._socket.close()
            self._socket = None

    def notify(self, *assignments):
        """Send ``KEY=value`` assignments in one datagram; True if it was sent."""
        if self._socket is None:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            self._socket.sendto(payload, self._address)
        except OSError as e:
            self._log.warn("Could not notify systemd at {address!r}: {error}",
                           address=self._address, error=e)
            return False
        return True

    def reload(self):
        """
        Handle ``systemctl reload``: report the reload, reload nothing, report ready.

        Nothing in a running chanserve can be swapped safely (routing and
        consumers are imported code); restart instead, which socket activation
        makes seamless.
        """
        self._log.info("Reload requested: nothing to reload; restart to apply code or settings changes")
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")
        if self.running and self.is_ready:
            self.notify("READY=1", "STATUS=Serving")

    def _sighup(self, signum, frame):
        self._reactor.callFromThread(self.reload)

    def _became_ready(self, _):
        if not self.running:
            return
        if getattr(self.parent, "failed", False):
            # A listen failure is handled (logged, exit 1) by the parent
            # before it gets here: not ready, whatever the Deferreds say.
            self.notify(f"STATUS=Start-up failed: {self.parent.failure_reason}")
            return
        self.is_ready = True
        self._log.info("Ready; notifying systemd")
        self.notify("READY=1", "STATUS=Serving")

    def _not_ready(self, failure):
        self._log.failure("Not ready: start-up failed", failure)
        self.notify(f"STATUS=Start-up failed: {failure.getErrorMessage()}")
