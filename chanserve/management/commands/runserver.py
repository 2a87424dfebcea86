"""
``manage.py runserver``: chanserve's interface server, channel layer and
workers in one process, restarted by Django's autoreloader, serving static
files in DEBUG like Django's own runserver.
"""

import os
import sys
from datetime import datetime

from django.conf import settings
from django.core.management.commands.runserver import Command as DjangoRunserverCommand
from django.db import connections
from django.utils import autoreload

from .. import _run


class Command(DjangoRunserverCommand):
    help = (
        "Starts chanserve for development: HTTP and WebSocket interface server, "
        "channel layer and workers in one process (serving static files in DEBUG)."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--noworker", action="store_false", dest="run_worker",
            help="Run the interface server only; run workers with runworker "
            "(needs a cross-process channel layer).")
        parser.add_argument(
            "--nostatic", action="store_false", dest="use_static_handler",
            help="Do not serve static files at STATIC_URL.")
        parser.add_argument(
            "--insecure", action="store_true", dest="insecure_serving",
            help="Serve static files even if DEBUG is False.")
        parser.add_argument(
            "--threads", type=int, default=None,
            help="Worker thread pool size (default: chanserve's).")

    def get_handler(self, *args, **options):
        """Not used: chanserve serves requests through the view consumer."""
        return None

    def endpoint(self):
        """The Twisted endpoint description for the address and port given."""
        addr = self.addr
        if addr == "0":
            addr = "0.0.0.0"
        return f"tcp:{int(self.port)}:interface={addr.replace(':', chr(92) + ':')}"

    def service_arguments(self, **options):
        """``twistd chanserve`` arguments for these options."""
        argv = ["--endpoint", self.endpoint()]
        if not options.get("run_worker", True):
            argv.append("--noworker")
        if options.get("threads"):
            argv += ["--threads", str(options["threads"])]
        if options.get("verbosity", 1) >= 1:
            argv += ["--access-log", "-"]
        return argv

    def inner_run(self, *args, **options):
        # An exception silenced so the reloader can start is raised here.
        autoreload.raise_last_exception()
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for conn in connections.all():
            conn.close()

        from twisted.internet import reactor

        _run.start_logging(options.get("verbosity", 1))
        static = _run.install_static_handler(options)
        service = _run.build_service(self.service_arguments(**options), reactor)
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"

        def started():
            server, listening = _run.find_listening(service)
            if listening is None:
                return
            listening.addCallbacks(bound, failed, callbackArgs=(server,))
            listening.addErrback(lambda f: self.stderr.write(f"Error: {f.getTraceback()}"))

        def bound(_, server):
            ports = getattr(server, "listening_ports", None) or []
            if getattr(service, "failed", False) or not ports:
                # The service reported the listen error and stops the reactor.
                return
            addresses = [p.getHost() for p in ports]
            where = ", ".join(
                f"{self.protocol}://{_host(a.host)}:{a.port}/" for a in addresses
                if hasattr(a, "port")) or self.endpoint()
            self.stdout.write(
                f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
                f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
                f"Starting chanserve development server at {where}\n"
                f"Channel layer: {_layer_description(options)}"
                f"{'' if options.get('run_worker', True) else ' (no workers: run manage.py runworker)'}"
                f"{'; serving static files' if static else ''}\n"
                f"Quit the server with {quit_command}.")
            self.stdout.flush()

        def failed(f):
            # Normally the service reports listen errors itself (and stops).
            self.stderr.write(f"Error: {f.getErrorMessage()}")
            service.failed = True
            reactor.stop()

        try:
            _run.run_reactor(reactor, service, on_started=started)
        except KeyboardInterrupt:
            sys.exit(0)
        if getattr(service, "failed", False):
            self.stderr.write(f"Error: could not listen on {self.endpoint()}.")
            self.stderr.flush()
            self.stdout.flush()
            # Like Django's runserver: sys.exit would not end the process
            # from the autoreloader's thread.
            os._exit(1)


def _host(host):
    return f"[{host}]" if ":" in host else host


def _layer_description(options):
    from ...layers import layer_settings
    try:
        conf = layer_settings("default")
    except Exception:
        return "default"
    return f"default ({conf.get('BACKEND')})"
