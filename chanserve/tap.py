"""
``twistd chanserve``: options, and the one ``MultiService`` they build.

Children are added in dependency order (layer, worker, interface server),
so ``MultiService.stopService`` stops the listeners first.
"""

import ipaddress
import math
import os
import sys

from twisted.python import usage

DEFAULT_ENDPOINT = "tcp:8000:interface=127.0.0.1"


def _number(kind, minimum, allow_zero=False, option=None):
    where = f"--{option} " if option else ""

    def parse(value):
        try:
            n = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}expected a number, got {value!r}")
        if not math.isfinite(n):
            raise ValueError(f"{where}expected a finite number, got {value!r}")
        if n < minimum and not (allow_zero and n == 0):
            raise ValueError(f"{where}must be at least {minimum}, got {value!r}")
        return n
    return parse


class Options(usage.Options):
    """Command-line options of ``twistd chanserve`` (contract section 1)."""

    synopsis = "[options]"
    longdesc = (
        "Serve a Django project's HTTP and WebSocket traffic through channels "
        "and run its consumers. Without --settings, DJANGO_SETTINGS_MODULE is used."
    )

    optFlags = [
        ["noworker", None, "Run the interface server only (needs a cross-process layer)."],
        ["worker-only", None, "Run workers only, with no listening socket (needs a cross-process layer)."],
        ["proxy-headers", None,
         "Trust X-Forwarded-For/-Proto/-Port from the --trusted-proxy addresses "
         "(and from unix-socket peers)."],
    ]

    optParameters = [
        ["settings", None, None, "Django settings module (default: $DJANGO_SETTINGS_MODULE)."],
        ["layer", None, "default", "Alias of the layer in CHANNEL_LAYERS."],
        ["threads", None, 10, "Worker thread pool size.", _number(int, 1, option="threads")],
        ["access-log", None, None, "Write an access log to PATH, or '-' for standard output."],
        ["root-path", None, "", "Path prefix this server is mounted under (fills root_path)."],
        ["http-timeout", None, 120.0,
         "Seconds to wait for a response before answering 503.",
         _number(float, 0, True, option="http-timeout")],
        ["websocket-timeout", None, 86400.0,
         "Close WebSockets open longer than this many seconds (0: never).",
         _number(float, 0, True, option="websocket-timeout")],
        ["websocket-connect-timeout", None, 20.0,
         "Seconds a WebSocket handshake waits for the connect consumer before 403.",
         _number(float, 0, True, option="websocket-connect-timeout")],
        ["ping-interval", None, 20.0,
         "Seconds between WebSocket pings (0: no pings).",
         _number(float, 0, True, option="ping-interval")],
        ["ping-timeout", None, 30.0,
         "Seconds to wait for a pong before dropping the peer.",
         _number(float, 0, True, option="ping-timeout")],
        ["max-request-body", None, 1 << 30,
         "Largest HTTP request body in bytes (413 above it; 0: no limit).",
         _number(int, 0, True, option="max-request-body")],
        ["websocket-max-message", None, 1 << 20,
         "Largest WebSocket message in bytes (close 1009 above it; 0: no limit).",
         _number(int, 0, True, option="websocket-max-message")],
        ["idle-timeout", None, 20.0,
         "Close an idle HTTP keep-alive connection after this many seconds.",
         _number(float, 0, True, option="idle-timeout")],
        ["header-timeout", None, 10.0,
         "Seconds a client may take to send its request headers (408 after).",
         _number(float, 0, True, option="header-timeout")],
        ["body-timeout", None, 60.0,
         "Seconds a request body may stall before 408.", _number(float, 0, True, option="body-timeout")],
        ["shutdown-timeout", None, 10.0,
         "On stop, seconds in all to let in-flight responses and consumers finish.",
         _number(float, 0, True, option="shutdown-timeout")],
        ["max-header-size", None, 1 << 16,
         "Largest request header block in bytes (431 above it).", _number(int, 1, option="max-header-size")],
        ["max-headers", None, 100,
         "Most request header lines (431 above it).", _number(int, 1, option="max-headers")],
        ["websocket-max-buffer", None, 1 << 24,
         "Most unsent output a WebSocket may hold before it is closed with 1013.",
         _number(int, 1, option="websocket-max-buffer")],
    ]

    compData = usage.Completions(
        optActions={"access-log": usage.CompleteFiles(), "settings": usage.Completer()})

    def __init__(self):
        super().__init__()
        self["endpoints"] = []
        self["only-channels"] = []
        self["exclude-channels"] = []
        self["trusted-proxies"] = []
        self["websocket-protocols"] = []
        self["pythonpath"] = []

    def opt_endpoint(self, description):
        """A Twisted server endpoint to listen on (repeatable; default tcp:8000:interface=127.0.0.1)."""
        _check_endpoint(description)
        self["endpoints"].append(description)

    def opt_port(self, port):
        """Listen on this TCP port on 127.0.0.1 (shortcut for --endpoint tcp:N:interface=127.0.0.1)."""
        try:
            n = int(port)
            if not 0 <= n <= 65535:
                raise ValueError
        except ValueError:
            raise usage.UsageError(f"--port must be a TCP port number 0-65535, not {port!r}")
        self["endpoints"].append(f"tcp:{n}:interface=127.0.0.1")

    def opt_only_channels(self, pattern):
        """Only consume channels matching this glob (repeatable)."""
        self["only-channels"].append(pattern)

    def opt_exclude_channels(self, pattern):
        """Do not consume channels matching this glob (repeatable)."""
        self["exclude-channels"].append(pattern)

    def opt_trusted_proxy(self, address):
        """An address or network (10.0.0.0/8) whose X-Forwarded-* headers are trusted (repeatable; default 127.0.0.1 and ::1)."""
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise usage.UsageError(
                f"--trusted-proxy {address!r} is not an IP address or network")
        self["trusted-proxies"].append(address)

    def opt_websocket_protocol(self, name):
        """A WebSocket subprotocol this server speaks, selected when a client offers it and the consumer chose none (repeatable)."""
        from .server._parsing import is_token
        if not is_token(name):
            raise usage.UsageError(f"--websocket-protocol {name!r} is not a valid subprotocol name")
        self["websocket-protocols"].append(name)

    def opt_pythonpath(self, directory):
        """Put DIR first on sys.path before importing settings (repeatable; the current directory always is)."""
        self["pythonpath"].append(directory)

    def postOptions(self):
        if self["noworker"] and self["worker-only"]:
            raise usage.UsageError("--noworker and --worker-only exclude each other")
        if not self["settings"]:
            self["settings"] = os.environ.get("DJANGO_SETTINGS_MODULE")
        if not self["settings"]:
            raise usage.UsageError(
                "no Django settings: pass --settings myproject.settings or set DJANGO_SETTINGS_MODULE")
        if not self["endpoints"] and not self["worker-only"]:
            self["endpoints"] = [DEFAULT_ENDPOINT]
        if not self["trusted-proxies"]:
            self["trusted-proxies"] = ["127.0.0.1", "::1"]
        if self["root-path"] and not self["root-path"].startswith("/"):
            raise usage.UsageError(f"--root-path must start with '/', not {self['root-path']!r}")
        self["root-path"] = self["root-path"].rstrip("/")
        if self["ping-interval"] and not self["ping-timeout"]:
            raise usage.UsageError("--ping-timeout must be above 0 when --ping-interval is set")


def _check_endpoint(description):
    """Parse an endpoint string now, so a typo is a usage error and not a failure at start-up."""
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor
    try:
        endpoints.serverFromString(MemoryReactor(), description)
    except IndexError:
        raise usage.UsageError(
            f"--endpoint {description!r}: no such socket was passed by systemd "
            f"(LISTEN_FDS/LISTEN_PID, or a name not in LISTEN_FDNAMES)")
    except (ValueError, TypeError, KeyError) as e:
        raise usage.UsageError(f"--endpoint {description!r} is not a valid server endpoint: {e}")


def setup_django(options):
    """Put the project on sys.path and run ``django.setup()`` with ``--settings``."""
    for directory in reversed([os.getcwd(), *options["pythonpath"]]):
        directory = os.path.abspath(directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)
    os.environ["DJANGO_SETTINGS_MODULE"] = options["settings"]
    import django
    django.setup()


def _run_system_checks():
    """
    Django's system checks, as ``runserver`` runs them: errors end start-up
    with one line naming each; warnings are logged once logging starts.
    """
    from django.core import checks
    from twisted.logger import Logger

    found = [m for m in checks.run_checks() if not m.is_silenced()]
    errors = [m for m in found if m.is_serious()]
    if errors:
        raise SystemExit("chanserve: system check failed: " + "; ".join(
            f"{m.id}: {m.msg}" + (f" (HINT: {m.hint})" if m.hint else "") for m in errors))
    log = Logger(namespace="chanserve.checks")
    for m in found:
        log.warn("System check {id}: {msg}", id=m.id, msg=m.msg)


def makeService(options):
    """
    Build the ``MultiService`` for ``options``; see ``chanserve.service``.

    A bad settings module, setting or routing ends ``twistd`` here with one
    line on standard error and exit status 1 (logging has not started yet).
    """
    from twisted.internet import reactor

    try:
        setup_django(options)
    except Exception as e:
        raise SystemExit(
            f"chanserve: cannot load Django settings {options['settings']!r}: "
            f"{type(e).__name__}: {e}")
    _run_system_checks()
    from .service import StartupError, make_chanserve_service
    try:
        return make_chanserve_service(options, reactor)
    except StartupError as e:
        raise SystemExit(f"chanserve: {e}")
