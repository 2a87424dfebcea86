"""
Tests for ``chanserve.systemd`` and for running chanserve under systemd.

Unit tests speak the sd_notify protocol to a fake ``NOTIFY_SOCKET`` (a unix
datagram socket the test binds and reads). The end-to-end tests play
systemd: they hold a listening TCP socket, start ``twistd -n chanserve
--endpoint systemd:...`` with it inherited as fd 3 and ``LISTEN_FDS`` /
``LISTEN_PID`` / ``LISTEN_FDNAMES`` set, and read its notifications.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from twisted.application import service
from twisted.internet import defer, protocol, reactor, task
from twisted.web.client import Agent, readBody
from twisted.python.failure import Failure
from twisted.trial import unittest

from chanserve.systemd import (
    SystemdNotifier, add_notifier, notify_socket_address, readiness, watchdog_interval)


class FakeNotifySocket:
    """A unix datagram socket standing in for systemd's notification socket."""

    def __init__(self, testcase, abstract=False):
        if abstract:
            self.name = f"@chanserve-test-{os.getpid()}-{id(self)}"
            address = "\0" + self.name[1:]
        else:
            directory = tempfile.mkdtemp(prefix="chanserve-notify-")
            testcase.addCleanup(shutil.rmtree, directory, True)
            self.name = address = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        testcase.addCleanup(self.sock.close)

    def received(self):
        """Every datagram waiting on the socket, decoded."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode("utf-8"))
            except BlockingIOError:
                return out


class ThreadCallClock(task.Clock):
    """A ``Clock`` that also records ``callFromThread`` calls (run them with ``run_thread_calls``)."""

    def __init__(self):
        super().__init__()
        self.thread_calls = []

    def callFromThread(self, f, *args, **kwargs):
        self.thread_calls.append((f, args, kwargs))

    def run_thread_calls(self):
        calls, self.thread_calls = self.thread_calls, []
        for f, args, kwargs in calls:
            f(*args, **kwargs)


class EnvironmentTests(unittest.SynchronousTestCase):
    """How the notifier reads systemd's environment variables."""

    def test_path(self):
        """An absolute ``NOTIFY_SOCKET`` path is used as it is."""
        self.assertEqual(notify_socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}),
                         "/run/systemd/notify")

    def test_abstract(self):
        """A leading ``@`` names the abstract namespace (a NUL byte)."""
        self.assertEqual(notify_socket_address({"NOTIFY_SOCKET": "@xyz"}), "\0xyz")

    def test_absent_or_relative(self):
        """No ``NOTIFY_SOCKET``, an empty one or a relative path means: not under systemd."""
        self.assertIsNone(notify_socket_address({}))
        self.assertIsNone(notify_socket_address({"NOTIFY_SOCKET": ""}))
        self.assertIsNone(notify_socket_address({"NOTIFY_SOCKET": "relative/path"}))

    def test_watchdog_half_interval(self):
        """Pings are due every half ``WATCHDOG_USEC``, in seconds."""
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "10000000"}), 5.0)

    def test_watchdog_off(self):
        """No, zero or malformed ``WATCHDOG_USEC`` turns the watchdog off."""
        for value in (None, "0", "-5", "soon"):
            environ = {} if value is None else {"WATCHDOG_USEC": value}
            self.assertIsNone(watchdog_interval(environ), value)

    def test_watchdog_pid(self):
        """A ``WATCHDOG_PID`` naming another process turns the watchdog off; ours keeps it."""
        environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}
        self.assertIsNone(watchdog_interval(environ, pid=1))
        self.assertEqual(watchdog_interval(environ, pid=4242), 1.0)


class SystemdNotifierTests(unittest.SynchronousTestCase):
    """The notifier service speaking sd_notify to a fake systemd."""

    def setUp(self):
        self.systemd = FakeNotifySocket(self)
        self.clock = ThreadCallClock()
        self.environ = {"NOTIFY_SOCKET": self.systemd.name}
        self.previous_sighup = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, self.previous_sighup)

    def notifier(self, **kwargs):
        kwargs.setdefault("handle_reload", False)
        notifier = SystemdNotifier(self.clock, self.environ, **kwargs)
        self.addCleanup(lambda: notifier.running and notifier.stopService())
        return notifier

    def test_ready_when_ready_fires(self):
        """``READY=1`` is sent only once the ``ready`` Deferred fires, and only once."""
        d = defer.Deferred()
        notifier = self.notifier(ready=lambda: d)
        notifier.startService()
        self.assertEqual(self.systemd.received(), [])
        self.assertFalse(notifier.is_ready)
        d.callback(None)
        self.assertEqual(self.systemd.received(), ["READY=1\nSTATUS=Serving"])
        self.assertTrue(notifier.is_ready)

    def test_ready_immediately_without_condition(self):
        """Without a ``ready`` callable, ``READY=1`` goes out when the service starts."""
        self.notifier().startService()
        self.assertEqual(self.systemd.received(), ["READY=1\nSTATUS=Serving"])

    def test_not_ready_on_failure(self):
        """A failed start-up sends a STATUS naming the error and never ``READY=1``."""
        notifier = self.notifier(ready=lambda: defer.fail(OSError("port 80 in use")))
        notifier.startService()
        self.assertEqual(self.systemd.received(), ["STATUS=Start-up failed: port 80 in use"])
        self.assertFalse(notifier.is_ready)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_listen_failure_under_chanserve_service(self):
        """
        Under ``ChanserveService``, a failed listen (which the service itself
        logs and turns into exit 1) is a STATUS line, never ``READY=1``.
        """
        from twisted.internet.error import CannotListenError
        from twisted.internet.testing import MemoryReactorClock

        from chanserve import service as chanserve_service
        self.patch(chanserve_service, "_exit_nonzero_at_exit", lambda: None)
        top = chanserve_service.ChanserveService(MemoryReactorClock())
        listening = defer.Deferred()

        class Listener(service.Service):
            name = "interface-server"

            def startService(self):
                super().startService()
                self.listening = listening

        Listener().setServiceParent(top)
        notifier = self.notifier(ready=lambda: readiness(listening))
        notifier.setServiceParent(top)
        top.startService()
        listening.errback(CannotListenError("127.0.0.1", 8000, OSError("in use")))
        [status] = self.systemd.received()
        self.assertTrue(status.startswith("STATUS=Start-up failed: cannot listen"), status)
        self.assertFalse(notifier.is_ready)

    def test_stopping(self):
        """Stopping the service sends ``STOPPING=1``, before the rest of the tree stops."""
        top = service.MultiService()
        order = []

        class Recorder(service.Service):
            def stopService(self):
                order.append("listener stopped")
                return super().stopService()

        Recorder().setServiceParent(top)
        notifier = self.notifier()
        notifier.setServiceParent(top)
        top.startService()
        self.systemd.received()
        original_notify = notifier.notify
        notifier.notify = lambda *a: (order.append(a[0]), original_notify(*a))[1]
        top.stopService()
        self.assertEqual(order, ["STOPPING=1", "listener stopped"])
        self.assertEqual(self.systemd.received(), ["STOPPING=1\nSTATUS=Stopping"])

    def test_ready_after_stop_is_not_sent(self):
        """A readiness that fires after shutdown began sends nothing."""
        d = defer.Deferred()
        notifier = self.notifier(ready=lambda: d)
        notifier.startService()
        notifier.stopService()
        d.callback(None)
        self.assertEqual(self.systemd.received(), ["STOPPING=1\nSTATUS=Stopping"])

    def test_watchdog_pings(self):
        """With ``WATCHDOG_USEC`` set, ``WATCHDOG=1`` goes out at once and then every half period."""
        self.environ["WATCHDOG_USEC"] = "4000000"
        notifier = self.notifier()
        notifier.startService()
        self.assertEqual(self.systemd.received(), ["WATCHDOG=1", "READY=1\nSTATUS=Serving"])
        self.clock.advance(1.9)
        self.assertEqual(self.systemd.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.systemd.received(), ["WATCHDOG=1"])
        self.clock.advance(2)
        self.assertEqual(self.systemd.received(), ["WATCHDOG=1"])
        notifier.stopService()
        self.assertEqual(self.systemd.received(), ["STOPPING=1\nSTATUS=Stopping"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_watchdog_without_usec(self):
        """Without ``WATCHDOG_USEC`` nothing is scheduled."""
        self.notifier().startService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abstract_socket(self):
        """An abstract-namespace ``NOTIFY_SOCKET`` (``@name``) is reached too."""
        abstract = FakeNotifySocket(self, abstract=True)
        self.environ["NOTIFY_SOCKET"] = abstract.name
        self.notifier().startService()
        self.assertEqual(abstract.received(), ["READY=1\nSTATUS=Serving"])

    def test_disabled_without_notify_socket(self):
        """Outside systemd the notifier sends nothing, schedules nothing, and leaves SIGHUP alone."""
        self.environ.clear()
        self.environ["WATCHDOG_USEC"] = "1000000"
        notifier = self.notifier(handle_reload=True)
        self.assertFalse(notifier.enabled)
        notifier.startService()
        self.assertFalse(notifier.notify("READY=1"))
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous_sighup)
        notifier.stopService()
        self.assertEqual(self.systemd.received(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_systemd_gone(self):
        """If the notification socket disappears, sends fail quietly (logged), never raise."""
        notifier = self.notifier()
        notifier.startService()
        self.systemd.received()
        self.systemd.sock.close()
        os.unlink(self.systemd.name)
        self.assertFalse(notifier.notify("WATCHDOG=1"))
        notifier.stopService()

    def test_reload(self):
        """A reload reports ``RELOADING=1`` with the monotonic time, then ``READY=1`` again."""
        notifier = self.notifier()
        notifier.startService()
        self.systemd.received()
        notifier.reload()
        reloading, ready = self.systemd.received()
        lines = reloading.split("\n")
        self.assertEqual(lines[0], "RELOADING=1")
        self.assertTrue(lines[1].startswith("MONOTONIC_USEC="))
        self.assertGreater(int(lines[1].split("=", 1)[1]), 0)
        self.assertEqual(ready, "READY=1\nSTATUS=Serving")

    def test_sighup_reloads(self):
        """Under systemd, SIGHUP is handled (the process survives) and triggers a reload on the reactor."""
        notifier = self.notifier(handle_reload=True)
        notifier.startService()
        self.systemd.received()
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(self.systemd.received(), [])
        self.clock.run_thread_calls()
        self.assertEqual([m.split("\n")[0] for m in self.systemd.received()],
                         ["RELOADING=1", "READY=1"])
        notifier.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.previous_sighup)


class ReadinessTests(unittest.SynchronousTestCase):
    """``readiness()`` joins other services' Deferreds without changing them."""

    def test_all_fire(self):
        """It fires once every Deferred has fired; None entries are skipped."""
        a, b = defer.Deferred(), defer.Deferred()
        d = readiness(a, None, b)
        a.callback("a")
        self.assertNoResult(d)
        b.callback("b")
        self.successResultOf(d)

    def test_results_untouched(self):
        """The observed Deferreds keep their own results for their other users."""
        a = defer.Deferred()
        readiness(a)
        a.callback("listening")
        self.assertEqual(self.successResultOf(a), "listening")

    def test_first_failure(self):
        """It fails with the first failure, and the failing Deferred still carries it too."""
        a, b = defer.Deferred(), defer.Deferred()
        d = readiness(a, b)
        a.errback(Failure(OSError("no")))
        self.failureResultOf(d, OSError)
        self.failureResultOf(a, OSError)
        b.callback(None)


TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 30


class NotifyReceiver(protocol.DatagramProtocol):
    """Systemd's side of ``NOTIFY_SOCKET``, on the reactor: waits for a given assignment."""

    def __init__(self):
        self.messages = []
        self._waiting = []

    def datagramReceived(self, data, addr):
        self.messages.append(data.decode("utf-8"))
        for assignment, d in list(self._waiting):
            if self._seen(assignment):
                self._waiting.remove((assignment, d))
                d.callback(self.messages)

    def _seen(self, assignment):
        return any(assignment in m.split("\n") for m in self.messages)

    def wait_for(self, assignment):
        """Fires with every message so far once one contains ``assignment``."""
        if self._seen(assignment):
            return defer.succeed(self.messages)
        d = defer.Deferred()
        self._waiting.append((assignment, d))
        return d.addTimeout(TIMEOUT, reactor)


class TwistdProcess(protocol.ProcessProtocol):
    """A ``twistd`` child; ``ended`` fires with its exit reason, output kept for failure messages."""

    def __init__(self):
        self.output = []
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value)

    def text(self):
        return b"".join(self.output).decode("utf-8", "replace")


class SocketActivationTests(unittest.TestCase):
    """``twistd chanserve`` under a fake systemd: socket activation, notifications, restart."""

    def setUp(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(self.listener.close)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        directory = tempfile.mkdtemp(prefix="chanserve-systemd-")
        self.addCleanup(shutil.rmtree, directory, True)
        # An abstract-namespace socket, named "@..." in NOTIFY_SOCKET as systemd does.
        name = f"chanserve-test-notify-{os.getpid()}-{secrets.token_hex(4)}"
        self.notify_path = "@" + name
        self.notifications = NotifyReceiver()
        port = reactor.listenUNIXDatagram(b"\0" + name.encode(), self.notifications)
        self.addCleanup(port.stopListening)
        self.database = os.path.join(directory, "db.sqlite3")

    def start(self, endpoint, **environ):
        """Start twistd with our listening socket as fd 3, the way systemd does."""
        env = dict(os.environ)
        env.update({
            "LISTEN_FDS": "1",
            "LISTEN_FDNAMES": "chanserve",
            "NOTIFY_SOCKET": self.notify_path,
            "DJANGO_SETTINGS_MODULE": "tests.project.settings_systemd",
            "CHANSERVE_TEST_DB": self.database,
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("LISTEN_PID", None)
        env.update(environ)
        child = TwistdProcess()
        # LISTEN_PID must be the pid of the process that reads it: the shell
        # sets it to its own pid, then execs twistd (same pid).
        args = ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', TWISTD,
                "--nodaemon", "--pidfile=", "chanserve", "--endpoint", endpoint]
        transport = reactor.spawnProcess(
            child, "/bin/sh", args, env=env, path=REPO,
            childFDs={0: "w", 1: "r", 2: "r", 3: self.listener.fileno()})
        child.transport = transport

        def cleanup():
            if child.ended.called:
                return None
            transport.signalProcess("KILL")
            return child.ended
        self.addCleanup(cleanup)
        return child

    @defer.inlineCallbacks
    def stop(self, child):
        """SIGTERM, as ``systemctl stop`` does; fires when the process is gone, checking it ended cleanly."""
        child.transport.signalProcess("TERM")
        reason = yield child.ended.addTimeout(TIMEOUT, reactor)
        # twistd ends by re-raising the signal it stopped on: systemd counts
        # both exit status 0 and death by SIGTERM as a clean stop.
        self.assertIn((reason.exitCode, reason.signal), [(0, None), (None, signal.SIGTERM)],
                      child.text())

    def get(self):
        """GET / through the socket we hold; fires with the body."""
        agent = Agent(reactor)
        d = agent.request(b"GET", f"http://127.0.0.1:{self.port}/".encode())
        d.addCallback(readBody)
        return d.addTimeout(TIMEOUT, reactor)

    @defer.inlineCallbacks
    def test_serves_inherited_socket(self):
        """With ``--endpoint systemd:domain=INET:index=0`` chanserve serves on the socket passed as fd 3."""
        child = self.start("systemd:domain=INET:index=0")
        body = yield self.get()
        self.assertEqual(body, f"activated pid={child.transport.pid}".encode(), child.text())
        yield self.stop(child)

    @defer.inlineCallbacks
    def test_notifications(self):
        """A real chanserve sends READY=1 once it listens and STOPPING=1 when told to stop."""
        child = self.start("systemd:domain=INET:name=chanserve")
        try:
            messages = yield self.notifications.wait_for("READY=1")
        except defer.TimeoutError:
            self.fail("no READY=1 notification:\n" + child.text())
        self.assertNotIn("STOPPING=1", "\n".join(messages))
        body = yield self.get()
        self.assertTrue(body.startswith(b"activated"))
        yield self.stop(child)
        self.assertIn("STOPPING=1", "\n".join(self.notifications.messages).split("\n"), child.text())

    @defer.inlineCallbacks
    def test_watchdog_and_reload(self):
        """With WATCHDOG_USEC set chanserve pings; SIGHUP (systemctl reload) keeps it serving."""
        child = self.start("systemd:domain=INET:index=0", WATCHDOG_USEC="200000")
        yield self.notifications.wait_for("READY=1")
        self.notifications.messages.clear()
        yield self.notifications.wait_for("WATCHDOG=1")
        child.transport.signalProcess("HUP")
        yield self.notifications.wait_for("RELOADING=1")
        body = yield self.get()
        self.assertEqual(body, f"activated pid={child.transport.pid}".encode(), child.text())
        self.assertFalse(child.ended.called)
        yield self.stop(child)

    @defer.inlineCallbacks
    def test_restart_refuses_nothing(self):
        """
        A connection made while the service restarts waits in the backlog of
        the socket systemd holds and is served by the next process.
        """
        first = self.start("systemd:domain=INET:name=chanserve")
        body = yield self.get()
        self.assertEqual(body, f"activated pid={first.transport.pid}".encode(), first.text())
        yield self.stop(first)
        during_restart = self.get()
        second = self.start("systemd:domain=INET:name=chanserve")
        body = yield during_restart
        self.assertEqual(body, f"activated pid={second.transport.pid}".encode(), second.text())
        yield self.stop(second)


CONTRIB = os.path.join(REPO, "contrib", "systemd")


def unit_settings(name):
    """The ``Key=value`` lines of a unit file in ``contrib/systemd``, continuation lines joined."""
    with open(os.path.join(CONTRIB, name)) as f:
        text = f.read().replace("\\\n", " ")
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


class ContribUnitsTests(unittest.TestCase):
    """The unit files shipped in ``contrib/systemd`` say what the docs say and systemd accepts them."""

    def test_notify_and_socket(self):
        """The service is Type=notify, reloads with SIGHUP and adopts the socket unit's named descriptor."""
        service_unit = unit_settings("chanserve.service")
        socket_unit = unit_settings("chanserve.socket")
        self.assertEqual(service_unit["Type"], ["notify"])
        self.assertEqual(service_unit["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        self.assertIn("WatchdogSec", service_unit)
        [name] = socket_unit["FileDescriptorName"]
        [exec_start] = service_unit["ExecStart"]
        self.assertIn(f"--endpoint systemd:domain=INET:name={name}", " ".join(exec_start.split()))
        self.assertIn("--nodaemon", exec_start.split())
        self.assertEqual(socket_unit["Service"], ["chanserve.service"])

    def test_systemd_analyze_verify(self):
        """``systemd-analyze verify`` finds nothing to complain about (twistd path made real)."""
        directory = tempfile.mkdtemp(prefix="chanserve-units-")
        self.addCleanup(shutil.rmtree, directory, True)
        for name in ("chanserve.service", "chanserve.socket"):
            with open(os.path.join(CONTRIB, name)) as f:
                text = f.read().replace("/srv/mysite/venv/bin/twistd", TWISTD)
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        result = subprocess.run(
            ["systemd-analyze", "verify", "chanserve.socket", "chanserve.service"],
            cwd=directory, capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


class AddNotifierTests(unittest.SynchronousTestCase):
    """``add_notifier``: how ``make_chanserve_service`` joins the notifier to its services."""

    def setUp(self):
        self.systemd = FakeNotifySocket(self)
        self.clock = ThreadCallClock()
        self.environ = {"NOTIFY_SOCKET": self.systemd.name}
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))

    def tree(self):
        """A MultiService with a layer-like and a server-like child (``listening`` Deferred)."""
        top = service.MultiService()
        layer = service.Service()
        layer.connected = defer.Deferred()
        layer.whenConnected = lambda: layer.connected
        layer.setServiceParent(top)
        server = service.Service()
        server.listening = defer.Deferred()
        server.setServiceParent(top)
        self.addCleanup(lambda: top.running and top.stopService())
        return top, layer, server

    def test_not_under_systemd(self):
        """Without ``NOTIFY_SOCKET`` nothing is added."""
        top, layer, server = self.tree()
        self.assertIsNone(add_notifier(top, self.clock, layer, environ={}))
        self.assertEqual(list(top), [layer, server])

    def test_ready_when_listening_and_connected(self):
        """READY=1 waits for both the server's ``listening`` and the layer's ``whenConnected``."""
        top, layer, server = self.tree()
        notifier = add_notifier(top, self.clock, layer, environ=self.environ)
        self.assertEqual(list(top), [layer, server, notifier])
        top.startService()
        server.listening.callback(None)
        self.assertEqual(self.systemd.received(), [])
        layer.connected.callback(None)
        self.assertEqual(self.systemd.received(), ["READY=1\nSTATUS=Serving"])
        top.stopService()
        self.assertEqual(self.systemd.received(), ["STOPPING=1\nSTATUS=Stopping"])

    def test_layer_without_when_connected(self):
        """An in-memory layer (no ``whenConnected``) is ready at once: only listening counts."""
        top, layer, server = self.tree()
        del layer.whenConnected
        add_notifier(top, self.clock, layer, environ=self.environ)
        top.startService()
        server.listening.callback(None)
        self.assertEqual(self.systemd.received(), ["READY=1\nSTATUS=Serving"])


class NotifierThreadTests(unittest.SynchronousTestCase):
    """The notifier started outside the main thread (e.g. a reactor run in a thread)."""

    def test_no_signal_handler_off_main_thread(self):
        """Off the main thread SIGHUP is left alone (signal handlers can't be set there); READY still goes."""
        systemd = FakeNotifySocket(self)
        previous = signal.getsignal(signal.SIGHUP)
        notifier = SystemdNotifier(ThreadCallClock(), {"NOTIFY_SOCKET": systemd.name})
        errors = []

        def run():
            try:
                notifier.startService()
            except Exception as e:
                errors.append(e)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(10)
        self.addCleanup(notifier.stopService)
        self.assertEqual(errors, [])
        self.assertIs(signal.getsignal(signal.SIGHUP), previous)
        self.assertEqual(systemd.received(), ["READY=1\nSTATUS=Serving"])
