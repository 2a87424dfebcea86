"""
Origin checks for ``websocket.connect`` consumers.

Browsers send any page's WebSocket handshake with the visitor's cookies
(cross-site WebSocket hijacking); checking the ``Origin`` header is how a
consumer refuses pages from other sites. ``allowed_hosts_only`` accepts
origins whose host matches ``ALLOWED_HOSTS``; ``origin_validator`` takes its
own list. A refused handshake gets HTTP 403 (``DenyConnection``).
"""

import functools
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from .exceptions import DenyConnection

__all__ = [
    "AllowedHostsOnlyOriginValidator",
    "BaseOriginValidator",
    "OriginValidator",
    "allowed_hosts_only",
    "get_origin",
    "origin_allowed",
    "origin_validator",
]


def get_origin(content):
    """
    The ``Origin`` header of a connect message as a str, or ``None``.

    ``None`` too when it is missing, repeated, or not ASCII.
    """
    values = []
    for header in content.get("headers") or ():
        try:
            name, value = header[0], header[1]
        except (IndexError, TypeError):
            continue
        if isinstance(name, str):
            name = name.encode("latin-1")
        if name.lower() == b"origin":
            values.append(value)
    if len(values) != 1:
        return None
    value = values[0]
    try:
        return value.decode("ascii") if isinstance(value, bytes) else str(value).encode(
            "ascii").decode("ascii")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None


def _origin_parts(origin):
    """``(scheme, host, port)`` of an origin, or ``None`` when it isn't a URL origin."""
    if not origin or origin == "null":
        return None
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


class BaseOriginValidator:
    """
    A decorator for ``websocket.connect`` consumers that checks ``Origin``.

    Subclasses implement ``validate_origin(message, origin)``; a handshake
    without a single, ASCII ``Origin`` header is refused. Refusal raises
    ``DenyConnection`` (HTTP 403) without running the consumer.
    """

    def __init__(self, func):
        functools.update_wrapper(self, func)
        self.func = func

    def __call__(self, message, *args, **kwargs):
        if message.channel.name != "websocket.connect":
            raise ValueError(
                f"Origin validators only apply to websocket.connect consumers, "
                f"not {message.channel.name!r}")
        origin = get_origin(message.content)
        if origin is None or not self.validate_origin(message, origin):
            raise DenyConnection(f"origin {origin!r} is not allowed")
        return self.func(message, *args, **kwargs)

    def validate_origin(self, message, origin):
        raise NotImplementedError


class OriginValidator(BaseOriginValidator):
    """
    Accept origins matching ``allowed_origins``.

    Each entry is a host pattern as in ``ALLOWED_HOSTS`` (``"example.com"``,
    ``".example.com"`` for it and its subdomains, ``"*"``), optionally with
    a scheme and port (``"https://example.com:8443"``), which must then match
    too.
    """

    def __init__(self, func, allowed_origins):
        super().__init__(func)
        self.allowed_origins = list(allowed_origins)

    def validate_origin(self, message, origin):
        return origin_allowed(origin, self.allowed_origins)


class AllowedHostsOnlyOriginValidator(BaseOriginValidator):
    """Accept origins whose host is in ``ALLOWED_HOSTS`` (as Django checks ``Host``)."""

    def validate_origin(self, message, origin):
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        return origin_allowed(origin, allowed)


def origin_allowed(origin, patterns):
    """Whether ``origin`` (an ``Origin`` header value) matches one of ``patterns``."""
    parts = _origin_parts(origin)
    if parts is None:
        return False
    scheme, host, port = parts
    port = port or _DEFAULT_PORTS.get(scheme)
    host = f"[{host}]" if ":" in host else host
    for pattern in patterns:
        pattern = pattern.lower()
        if "://" in pattern:
            want_scheme, _, hostport = pattern.partition("://")
            hostport = hostport.split("/", 1)[0]
            if hostport.startswith("["):
                inside, _, rest = hostport[1:].partition("]")
                want_host, want_port = f"[{inside}]", rest[1:] if rest.startswith(":") else ""
            else:
                want_host, _, want_port = hostport.partition(":")
            if want_scheme != scheme:
                continue
            want_port = int(want_port) if want_port.isdigit() else _DEFAULT_PORTS.get(scheme)
            if want_port != port:
                continue
            pattern = want_host[1:] if want_host.startswith("*.") else want_host
        if validate_host(host, [pattern]):
            return True
    return False


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_validator(allowed_origins):
    """``@origin_validator(["https://example.com", ".example.org"])`` for a connect consumer."""
    def decorator(func):
        return OriginValidator(func, allowed_origins)
    return decorator


#: ``@allowed_hosts_only`` on a ``websocket.connect`` consumer.
allowed_hosts_only = AllowedHostsOnlyOriginValidator
