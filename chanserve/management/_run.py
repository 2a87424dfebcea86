"""What ``runserver`` and ``runworker`` share: building and running the services."""

import os
import sys
import threading

from django.conf import settings
from django.core.management.base import CommandError
from twisted.python import usage


def settings_module():
    """The dotted name of the settings in use."""
    return os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE


def build_service(argv, reactor):
    """``make_chanserve_service`` for ``twistd chanserve`` arguments ``argv``."""
    from django.core.exceptions import ImproperlyConfigured

    from ..service import make_chanserve_service
    from ..tap import Options
    options = Options()
    try:
        options.parseOptions(["--settings", settings_module(), *argv])
        return make_chanserve_service(options, reactor)
    except usage.UsageError as e:
        raise CommandError(str(e)) from None
    except ImproperlyConfigured as e:
        raise CommandError(f"improperly configured: {e}") from None


def install_static_handler(options):
    """Serve ``STATIC_URL`` from the default view consumer, as staticfiles' runserver does."""
    from django.apps import apps
    if not apps.is_installed("django.contrib.staticfiles"):
        return False
    if not options.get("use_static_handler", True):
        return False
    if not (settings.DEBUG or options.get("insecure_serving")):
        return False
    from django.core.exceptions import ImproperlyConfigured

    from ..handler import AsgiHandler, get_view_handler, set_view_handler
    from ..staticfiles import StaticFilesHandler
    current = get_view_handler()
    if isinstance(current, StaticFilesHandler):
        return True
    try:
        static = StaticFilesHandler(current if isinstance(current, AsgiHandler) else AsgiHandler())
    except ImproperlyConfigured as e:
        # e.g. no STATIC_URL: serve no static files, like a missing finder would.
        sys.stderr.write(f"Not serving static files: {e}\n")
        return False
    set_view_handler(static)
    return True


def start_logging(verbosity, stream=None):
    """Send Twisted log events at or above the level ``verbosity`` asks for to ``stream``."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    level = {0: LogLevel.error, 1: LogLevel.warn, 2: LogLevel.info}.get(verbosity, LogLevel.debug)
    observer = FilteringLogObserver(
        textFileLogObserver(stream or sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def find_listening(service):
    """The ``listening`` Deferred of the interface server inside ``service``, or None."""
    todo = [service]
    while todo:
        s = todo.pop(0)
        listening = getattr(s, "listening", None)
        if listening is not None:
            return s, listening
        todo.extend(getattr(s, "services", ()))
    return None, None


def run_reactor(reactor, service, on_started=None):
    """
    Start ``service`` once ``reactor`` runs, stop it at shutdown, and run
    the reactor (``on_started()`` is called once the service started). In a thread other than the main one (Django's autoreloader
    runs the server in one) no signal handlers are installed and the
    reactor's thread pool is made of daemon threads, so the process can
    exit (or restart) while the reactor runs.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main:
        pool = reactor.getThreadPool()

        def daemon_thread(*args, **kwargs):
            thread = threading.Thread(*args, **kwargs)
            thread.daemon = True
            return thread

        pool.threadFactory = daemon_thread

    def start():
        service.startService()
        if on_started is not None:
            on_started()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run(installSignalHandlers=main)
