"""
The one ``MultiService`` that ``twistd chanserve`` (and ``runserver``) runs:
the channel layer, the worker and the interface server, in that order.

Children start in that order and stop in reverse, one after the other: the
interface server drains first (while the worker still answers its in-flight
requests), then the worker finishes its consumers, then the layer stops. One
``--shutdown-timeout`` bounds the whole stop: the worker gets what the
interface server left of it.
"""

import atexit
import os
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

__all__ = ["ChanserveService", "StartupError", "make_chanserve_service"]


class StartupError(usage.UsageError):
    """The service can't be built from these options and settings (one-line message)."""


class ChanserveService(service.MultiService):
    """
    A ``MultiService`` that stops its children one at a time, last added
    first, each after the previous one finished stopping.

    With a ``shutdown_timeout`` (seconds; None or 0: no limit), stopping
    ends within that time: a child with a ``stop_timeout`` (the worker) is
    given what is left of it when its turn comes.

    If a child fails to start, or exposes a ``listening`` Deferred (the
    interface server) that fails, that is logged as one line and the reactor
    is stopped; the process then exits with status 1.
    """

    _log = Logger()
    name = "chanserve"

    def __init__(self, reactor, shutdown_timeout=None):
        super().__init__()
        self.reactor = reactor
        self.shutdown_timeout = shutdown_timeout
        self.failed = False
        self.failure_reason = None

    def privilegedStartService(self):
        for child in self:
            try:
                child.privilegedStartService()
            except Exception as e:
                self._start_failed(child, e)
                return

    def startService(self):
        service.Service.startService(self)
        for child in self:
            try:
                child.startService()
            except Exception as e:
                self._start_failed(child, e)
                return
            listening = getattr(child, "listening", None)
            if isinstance(listening, defer.Deferred):
                listening.addErrback(self._listen_failed)

    def _start_failed(self, child, error):
        # The child is half-started: don't ask it to stop.
        child.running = False
        self._fail("chanserve could not start: {service}: {error}",
                   service=child.name or type(child).__name__,
                   error=f"{type(error).__name__}: {error}")

    def _listen_failed(self, f):
        self._fail("chanserve could not start: cannot listen: {error}",
                   error=f.getErrorMessage())

    def _fail(self, format, **kwargs):
        """Log one critical line, stop the reactor and make the process exit with status 1."""
        self._log.critical(format, **kwargs)
        if self.failed:
            return
        self.failed = True
        self.failure_reason = format.split(": ", 1)[-1].format(**kwargs)
        _exit_nonzero_at_exit()
        if getattr(self.reactor, "running", False):
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self):
        service.Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self):
        deadline = None
        if self.shutdown_timeout:
            deadline = self.reactor.seconds() + self.shutdown_timeout
        for child in reversed(list(self)):
            if not child.running:
                continue
            if deadline is not None and hasattr(child, "stop_timeout"):
                # At least a moment: a stop_timeout of 0 means "no limit".
                child.stop_timeout = max(0.001, deadline - self.reactor.seconds())
            try:
                await defer.maybeDeferred(child.stopService)
            except Exception:
                self._log.failure("Stopping {name} failed", name=child.name)


_exit_status = []


def _exit_nonzero_at_exit():
    """Make the process exit with status 1 once twistd is done cleaning up."""
    _exit_status.append(1)


def _exit_if_failed():
    # Registered when this module is imported (before twistd starts logging),
    # so it runs after the other exit handlers.
    if _exit_status:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(_exit_status[0])


atexit.register(_exit_if_failed)


def _server_options(options):
    def get(key, default):
        value = options.get(key)
        return default if value is None else value

    return dict(
        access_log=options.get("access-log"),
        proxy_headers=bool(options.get("proxy-headers")),
        trusted_proxies=tuple(get("trusted-proxies", None) or ("127.0.0.1", "::1")),
        root_path=get("root-path", ""),
        http_timeout=float(get("http-timeout", 120.0)),
        websocket_timeout=float(get("websocket-timeout", 86400.0)),
        websocket_connect_timeout=float(get("websocket-connect-timeout", 20.0)),
        ping_interval=float(get("ping-interval", 20.0)),
        ping_timeout=float(get("ping-timeout", 30.0)),
        max_request_body=int(get("max-request-body", 1 << 30)),
        websocket_max_message=int(get("websocket-max-message", 1 << 20)),
        idle_timeout=float(get("idle-timeout", 20.0)),
        header_timeout=float(get("header-timeout", 10.0)),
        body_timeout=float(get("body-timeout", 60.0)),
        shutdown_timeout=float(get("shutdown-timeout", 10.0)),
        max_header_size=int(get("max-header-size", 1 << 16)),
        max_headers=int(get("max-headers", 100)),
        websocket_max_buffer=int(get("websocket-max-buffer", 1 << 24)),
        websocket_protocols=tuple(get("websocket-protocols", None) or ()),
    )


def make_chanserve_service(options, reactor):
    """
    Build the ``chanserve`` service from parsed ``tap.Options`` (any mapping
    with the same keys works); Django must be set up already.

    The layer named by ``--layer`` is built and registered under its alias
    and as ``"default"``, so ``Channel(...)`` in consumers and views uses it.
    Raises ``StartupError`` (a ``usage.UsageError``) with one line for bad
    settings, a broken routing, or a cross-process mode on an in-memory layer.
    """
    from django.core.exceptions import ImproperlyConfigured

    from .layers import build_channel_layer, channel_layers
    from .routing import load_routing

    alias = options.get("layer") or "default"
    noworker = bool(options.get("noworker"))
    worker_only = bool(options.get("worker-only"))
    if noworker and worker_only:
        raise StartupError("--noworker and --worker-only exclude each other")
    try:
        layer = build_channel_layer(alias, reactor)
        router = None if noworker else load_routing(alias)
    except ImproperlyConfigured as e:
        raise StartupError(str(e)) from e
    if (noworker or worker_only) and not getattr(layer, "cross_process", False):
        mode = "--noworker" if noworker else "--worker-only"
        raise StartupError(
            f"{mode} needs a cross-process channel layer, but CHANNEL_LAYERS[{alias!r}] is "
            f"{type(layer).__name__}, which only works inside one process: use "
            f"chanserve.layers.RedisChannelLayer, or run without {mode}")

    channel_layers.register("default", layer)
    channel_layers.register(alias, layer)

    server_options = _server_options(options)
    top = ChanserveService(reactor, shutdown_timeout=server_options["shutdown_timeout"])
    if service.IService.providedBy(layer):
        layer.setServiceParent(top)
    if not noworker:
        from .worker import WorkerService
        worker = WorkerService(
            layer, reactor, router, threads=int(options.get("threads") or 10),
            only_channels=tuple(options.get("only-channels") or ()),
            exclude_channels=tuple(options.get("exclude-channels") or ()),
            stop_timeout=server_options["shutdown_timeout"])
        worker.setServiceParent(top)
    if not worker_only:
        from .server import InterfaceServer
        endpoints = list(options.get("endpoints") or ())
        if not endpoints:
            from .tap import DEFAULT_ENDPOINT
            endpoints = [DEFAULT_ENDPOINT]
        server = InterfaceServer(layer, reactor, endpoints, **server_options)
        server.setServiceParent(top)
    from .systemd import add_notifier
    add_notifier(top, reactor, layer)
    return top
