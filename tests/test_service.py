"""Tests for ``chanserve.service``: composing layer, worker and server; stopping; start-up failures."""

from django.test import override_settings
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from chanserve import service as chanserve_service
from chanserve.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from chanserve.server import InterfaceServer
from chanserve.service import ChanserveService, StartupError, make_chanserve_service
from chanserve.tap import Options
from chanserve.worker import WorkerService

LAYERS = {
    "default": {"BACKEND": "chanserve.layers.InMemoryChannelLayer",
                "ROUTING": "tests.project.seed_routing.channel_routing"},
    "other": {"BACKEND": "chanserve.layers.InMemoryChannelLayer",
              "ROUTING": "tests.project.seed_routing.channel_routing",
              "CONFIG": {"capacity": 7}},
    "broken": {"BACKEND": "chanserve.layers.InMemoryChannelLayer",
               "ROUTING": "tests.project.nothing_here.routing"},
}


class FakeCrossProcessLayer(InMemoryChannelLayer):
    """An in-memory layer that claims to be cross-process (to build the split modes)."""

    cross_process = True


def options(*args):
    o = Options()
    o.parseOptions(["--settings", "tests.project.settings", *args])
    return o


class MakeServiceTests(SynchronousTestCase):
    """``make_chanserve_service`` builds the right children in the right order."""

    def setUp(self):
        saved = dict(channel_layers._layers)

        def restore():
            channel_layers._layers.clear()
            channel_layers._layers.update(saved)
        self.addCleanup(restore)
        self.settings = override_settings(CHANNEL_LAYERS=LAYERS)
        self.settings.enable()
        self.addCleanup(self.settings.disable)
        self.reactor = MemoryReactorClock()

    def test_all_in_one(self):
        """Default mode: layer, worker, interface server, in that order, under 'chanserve'."""
        top = make_chanserve_service(options("--port", "0", "--threads", "3"), self.reactor)
        self.assertIsInstance(top, service.MultiService)
        self.assertEqual(top.name, "chanserve")
        layer, worker, server = list(top)
        self.assertIsInstance(layer, InMemoryChannelLayer)
        self.assertIsInstance(worker, WorkerService)
        self.assertIsInstance(server, InterfaceServer)
        self.assertIs(worker.layer, layer)
        self.assertIs(server.layer, layer)
        self.assertIs(layer.reactor, self.reactor)
        self.assertEqual(worker.threads, 3)
        self.assertEqual(server.endpoints, ["tcp:0:interface=127.0.0.1"])

    def test_layer_registered(self):
        """The served layer is what ``get_channel_layer`` returns for its alias and 'default'."""
        top = make_chanserve_service(options("--layer", "other"), self.reactor)
        layer = list(top)[0]
        self.assertIs(get_channel_layer("other"), layer)
        self.assertIs(get_channel_layer("default"), layer)
        self.assertEqual(layer.alias, "other")
        self.assertEqual(layer.capacity.default, 7)

    def test_server_options_passed(self):
        """Interface options reach the server."""
        top = make_chanserve_service(options(
            "--endpoint", "tcp:0", "--endpoint", "unix:/tmp/x.sock", "--http-timeout", "5",
            "--root-path", "/app", "--websocket-connect-timeout", "3"), self.reactor)
        server = list(top)[-1]
        self.assertEqual(server.endpoints, ["tcp:0", "unix:/tmp/x.sock"])
        self.assertEqual(server.http_timeout, 5.0)
        self.assertEqual(server.websocket_connect_timeout, 3.0)
        self.assertEqual(server.root_path, "/app")

    def test_tuning_options_passed(self):
        """Timeouts and header limits reach the server; --shutdown-timeout the worker too."""
        top = make_chanserve_service(options(
            "--idle-timeout", "7", "--header-timeout", "4", "--body-timeout", "9",
            "--shutdown-timeout", "2.5", "--max-header-size", "2048", "--max-headers", "12",
            "--websocket-max-buffer", "65536"), self.reactor)
        worker, server = list(top)[-2:]
        self.assertEqual((server.idle_timeout, server.header_timeout, server.body_timeout,
                          server.shutdown_timeout, server.max_header_size, server.max_headers),
                         (7.0, 4.0, 9.0, 2.5, 2048, 12))
        self.assertEqual(worker.stop_timeout, 2.5)
        self.assertEqual(server.websocket_max_buffer, 65536)

    def test_trusted_proxy_checked(self):
        """--trusted-proxy takes addresses and networks; anything else is a usage error."""
        self.assertEqual(options("--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1")
                         ["trusted-proxies"], ["10.0.0.0/8", "::1"])
        e = self.assertRaises(UsageError, options, "--trusted-proxy", "proxy.example")
        self.assertIn("--trusted-proxy", str(e))

    def test_non_finite_numbers_refused(self):
        """``nan`` and ``inf`` are usage errors naming the option, not a server that fails later."""
        for value in ("nan", "inf", "-inf", "1e400"):
            e = self.assertRaises(UsageError, options, "--websocket-connect-timeout", value)
            self.assertIn("--websocket-connect-timeout", str(e))
            self.assertIn("finite", str(e))

    def test_websocket_protocols(self):
        """``--websocket-protocol`` (repeatable) reaches the server; a non-token is a usage error."""
        top = make_chanserve_service(options("--websocket-protocol", "graphql-ws",
                                             "--websocket-protocol", "v2.chat"), self.reactor)
        self.assertEqual(list(top)[-1].websocket_protocols, ("graphql-ws", "v2.chat"))
        e = self.assertRaises(UsageError, options, "--websocket-protocol", "a b")
        self.assertIn("--websocket-protocol", str(e))

    def test_worker_channel_globs(self):
        """``--only-channels`` / ``--exclude-channels`` reach the worker."""
        top = make_chanserve_service(options("--only-channels", "websocket.*",
                                             "--exclude-channels", "*.disconnect"), self.reactor)
        worker = list(top)[1]
        self.assertEqual(sorted(worker.channels), ["websocket.connect", "websocket.receive"])

    def test_split_modes_refused_in_memory(self):
        """``--noworker`` / ``--worker-only`` with the in-memory layer: a StartupError naming the mode."""
        for mode in ("--noworker", "--worker-only"):
            e = self.assertRaises(StartupError, make_chanserve_service, options(mode), self.reactor)
            self.assertIn(mode, str(e))
            self.assertIn("cross-process", str(e))
            self.assertNotIn("\n", str(e))

    def test_split_modes_with_cross_process_layer(self):
        """With a cross-process layer, ``--noworker`` has no worker and ``--worker-only`` no server."""
        layers = dict(LAYERS, default=dict(LAYERS["default"],
                                           BACKEND="tests.test_service.FakeCrossProcessLayer"))
        with override_settings(CHANNEL_LAYERS=layers):
            top = make_chanserve_service(options("--noworker"), self.reactor)
            self.assertEqual([type(s) for s in top], [FakeCrossProcessLayer, InterfaceServer])
            top = make_chanserve_service(options("--worker-only"), self.reactor)
            self.assertEqual([type(s) for s in top], [FakeCrossProcessLayer, WorkerService])

    def test_broken_routing(self):
        """A broken ROUTING is a one-line StartupError naming the setting."""
        e = self.assertRaises(StartupError, make_chanserve_service,
                              options("--layer", "broken"), self.reactor)
        self.assertIn("CHANNEL_LAYERS['broken']['ROUTING']", str(e))

    def test_unknown_layer(self):
        """An unknown ``--layer`` alias is a StartupError listing the known ones."""
        e = self.assertRaises(StartupError, make_chanserve_service,
                              options("--layer", "nope"), self.reactor)
        self.assertIn("'nope'", str(e))
        self.assertIn("default", str(e))


class Recorder(service.Service):
    """A child service whose stop waits on a Deferred the test controls."""

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.stopping = None

    def startService(self):
        super().startService()
        self.log.append(("start", self.name))

    def stopService(self):
        super().stopService()
        self.log.append(("stop", self.name))
        self.stopping = defer.Deferred()
        return self.stopping


class ChanserveServiceTests(SynchronousTestCase):
    """``ChanserveService`` starts in order and stops children one at a time, in reverse."""

    def test_sequential_stop(self):
        """Each child stops only after the one added after it finished stopping."""
        log = []
        top = ChanserveService(MemoryReactorClock())
        children = [Recorder(n, log) for n in ("layer", "worker", "server")]
        for child in children:
            child.setServiceParent(top)
        top.startService()
        self.assertEqual(log, [("start", "layer"), ("start", "worker"), ("start", "server")])
        del log[:]
        d = top.stopService()
        self.assertEqual(log, [("stop", "server")])
        children[2].stopping.callback(None)
        self.assertEqual(log, [("stop", "server"), ("stop", "worker")])
        children[1].stopping.callback(None)
        self.assertNoResult(d)
        children[0].stopping.callback(None)
        self.successResultOf(d)

    def test_one_shutdown_bound(self):
        """
        With ``shutdown_timeout``, a child with a ``stop_timeout`` (the
        worker) gets what the children stopped before it left of the time.
        """
        log = []
        reactor = MemoryReactorClock()
        top = ChanserveService(reactor, shutdown_timeout=10.0)
        worker, server = Recorder("worker", log), Recorder("server", log)
        worker.stop_timeout = 10.0
        worker.setServiceParent(top)
        server.setServiceParent(top)
        top.startService()
        top.stopService()
        reactor.advance(7.5)
        server.stopping.callback(None)
        self.assertEqual(worker.stop_timeout, 2.5)

    def test_failing_child_stop_does_not_block(self):
        """A child whose stop fails is logged; the others still stop."""
        log = []
        top = ChanserveService(MemoryReactorClock())
        first, second = Recorder("a", log), Recorder("b", log)
        first.setServiceParent(top)
        second.setServiceParent(top)
        top.startService()
        d = top.stopService()
        second.stopping.errback(RuntimeError("stop failed"))
        first.stopping.callback(None)
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_listen_failure_stops_reactor(self):
        """A child's failed ``listening`` Deferred: one critical line, reactor stopped, exit 1 armed."""
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        armed = []
        self.patch(chanserve_service, "_exit_nonzero_at_exit", lambda: armed.append(True))
        reactor = MemoryReactorClock()
        reactor.running = True
        top = ChanserveService(reactor)

        class Listener(service.Service):
            name = "server"

            def startService(self):
                super().startService()
                self.listening = defer.fail(CannotListenError("127.0.0.1", 80, OSError("in use")))

        Listener().setServiceParent(top)
        top.startService()
        self.assertTrue(top.failed)
        self.assertEqual(armed, [True])
        self.assertTrue(reactor.hasStopped)
        lines = [e for e in events if e.get("log_level") is not None
                 and e["log_level"].name == "critical"]
        self.assertEqual(len(lines), 1)
        self.assertIn("cannot listen", lines[0]["log_format"])
        self.assertIn("in use", lines[0]["error"])

    def test_child_start_failure(self):
        """A child raising in startService: one critical line naming it, reactor stopped, exit 1 armed."""
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        armed = []
        self.patch(chanserve_service, "_exit_nonzero_at_exit", lambda: armed.append(True))
        reactor = MemoryReactorClock()
        top = ChanserveService(reactor)
        log = []
        first = Recorder("layer", log)
        first.setServiceParent(top)

        class Broken(service.Service):
            name = "interface-server"

            def startService(self):
                super().startService()
                raise OSError("no such file: /nowhere/log")

        broken = Broken()
        broken.setServiceParent(top)
        top.startService()
        self.assertTrue(top.failed)
        self.assertEqual(armed, [True])
        self.assertFalse(broken.running)
        critical = [e for e in events if e.get("log_level") is not None
                    and e["log_level"].name == "critical"]
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["service"], "interface-server")
        self.assertIn("OSError: no such file", critical[0]["error"])
        # The reactor is asked to stop once it runs; stopping stops only what started.
        self.assertIn((reactor.stop, (), {}), reactor.whenRunningHooks)
        d = top.stopService()
        self.assertEqual(log, [("start", "layer"), ("stop", "layer")])
        first.stopping.callback(None)
        self.successResultOf(d)
