"""
Channel routing: which consumer runs for a message.

A routing is a list of ``route(...)``, ``route_class(...)`` and
``include(...)`` entries; the first entry that matches a message wins::

    channel_routing = [
        route("websocket.connect", ws_add, path=r"^/chat/(?P<room>\\w+)/$"),
        include("myapp.routing.http_routing", path=r"^/api"),
    ]

Filters are regular expressions searched in the message's string keys (a
key that is missing or not a ``str`` never matches); their named groups
become keyword arguments of the consumer. Unnamed groups are refused.
``include`` joins its filters onto the included routes' filters of the same
key; both patterns must start with ``^`` to be joined.

``Router`` is what the worker uses: the project's routing flattened, the
default routes appended, and per channel the list of candidate routes.
"""

import importlib
import re

__all__ = [
    "Route", "RouteClass", "Include", "Router", "route", "route_class", "include",
    "default_routing", "load_routing", "RoutingError",
]


class RoutingError(ValueError):
    """A routing entry is malformed (bad filter, unnamed group, unjoinable include)."""


def _import_string(path):
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None


def _name_of(thing):
    if isinstance(thing, str):
        return thing
    module = getattr(thing, "__module__", None)
    qualname = getattr(thing, "__qualname__", None) or getattr(thing, "__name__", None)
    if qualname is None:
        return repr(thing)
    return f"{module}.{qualname}" if module else qualname


def _compile_filter(key, value, where):
    if not isinstance(key, str):
        raise RoutingError(f"{where}: filter keys must be str, not {key!r}")
    if isinstance(value, re.Pattern):
        regex = value
    elif isinstance(value, str):
        try:
            regex = re.compile(value)
        except re.error as e:
            raise RoutingError(f"{where}: filter {key}={value!r} is not a valid regex: {e}") from None
    else:
        raise RoutingError(f"{where}: filter {key}= must be a regex string, not {value!r}")
    if not isinstance(regex.pattern, str):
        raise RoutingError(f"{where}: filter {key}= must be a str pattern, not bytes")
    if regex.groups != len(regex.groupindex):
        raise RoutingError(
            f"{where}: filter {key}={regex.pattern!r} has unnamed groups; only named groups "
            f"(?P<name>...) are allowed, because matches become consumer keyword arguments")
    return regex


def _check_channel(name, where):
    from .layers._validation import validate_channel_name
    try:
        return validate_channel_name(name, receive=True)
    except TypeError as e:
        raise RoutingError(f"{where}: {e}") from None


class Route:
    """
    Run ``consumer`` for messages on ``channels`` (one name or a list) whose
    string keys match every filter.

    ``consumer`` is a callable or a dotted path to one (imported when the
    routing is loaded).
    """

    def __init__(self, channels, consumer, **filters):
        where = f"route({channels!r}, {_name_of(consumer)})"
        if isinstance(channels, str):
            channels = [channels]
        self.channels = tuple(dict.fromkeys(_check_channel(c, where) for c in channels))
        if not self.channels:
            raise RoutingError(f"{where}: needs at least one channel name")
        if not isinstance(consumer, str) and not callable(consumer):
            raise RoutingError(f"{where}: the consumer must be a callable or a dotted path")
        self.consumer = consumer
        self.filters = {k: _compile_filter(k, v, where) for k, v in filters.items()}

    def channel_names(self):
        """The set of channels this route consumes."""
        return set(self.channels)

    def resolve(self):
        """Import a dotted-path consumer; raises ``RoutingError`` if it can't."""
        if isinstance(self.consumer, str):
            path = self.consumer
            try:
                consumer = _import_string(path)
            except ImportError as e:
                raise RoutingError(f"cannot import consumer {path!r}: {e}") from e
            if not callable(consumer):
                raise RoutingError(f"consumer {path!r} is not callable")
            self.consumer = consumer
        return self

    def match(self, content):
        """
        ``(consumer, kwargs)`` if ``content`` (the message dict) passes every
        filter, else ``None``. (The channel is checked by the caller.)
        """
        if not self.filters:
            return self.consumer, {}
        kwargs = {}
        for key, regex in self.filters.items():
            value = content.get(key)
            if type(value) is not str:
                return None
            m = regex.search(value)
            if m is None:
                return None
            kwargs.update(m.groupdict())
        return self.consumer, kwargs

    def with_prefixes(self, prefixes, where):
        """A copy with an include's ``prefixes`` joined onto the filters."""
        joined = dict(self.filters)
        for key, prefix in prefixes.items():
            mine = joined.get(key)
            joined[key] = prefix if mine is None else _join(prefix, mine, key, where)
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.filters = joined
        return copy

    def flatten(self):
        return [self]

    def __repr__(self):
        filters = "".join(f", {k}={v.pattern!r}" for k, v in self.filters.items())
        channels = self.channels[0] if len(self.channels) == 1 else list(self.channels)
        return f"route({channels!r}, {_name_of(self.consumer)}{filters})"


class RouteClass(Route):
    """
    Route to a class-based consumer: the class's ``channel_names()`` gives the
    channels, and calling the class with ``(message, **kwargs)`` handles one
    message (Channels 1.x ``BaseConsumer`` style).
    """

    def __init__(self, consumer, **filters):
        if isinstance(consumer, str):
            try:
                consumer = _import_string(consumer)
            except ImportError as e:
                raise RoutingError(f"route_class({consumer!r}): {e}") from e
        names = getattr(consumer, "channel_names", None)
        if not callable(names):
            raise RoutingError(
                f"route_class({_name_of(consumer)}): the class has no channel_names() method")
        super().__init__(list(names()), consumer, **filters)

    def __repr__(self):
        filters = "".join(f", {k}={v.pattern!r}" for k, v in self.filters.items())
        return f"route_class({_name_of(self.consumer)}{filters})"


def _join(prefix, pattern, key, where):
    p, q = prefix.pattern, pattern.pattern
    if not p.startswith("^") or not q.startswith("^"):
        raise RoutingError(
            f"{where}: cannot join include filter {key}={p!r} with route filter "
            f"{key}={q!r}: both must start with '^' to be joined")
    try:
        return re.compile(p + q[1:], prefix.flags | pattern.flags)
    except re.error as e:
        raise RoutingError(
            f"{where}: joining {key}={p!r} and {key}={q!r} gives an invalid regex: {e}") from None


class Include:
    """
    Include another routing (a list, or a dotted path to one), with its
    routes' filters prefixed by ``prefixes``.
    """

    def __init__(self, routing, **prefixes):
        self.routing = routing
        self.where = f"include({_name_of(routing) if isinstance(routing, str) else '[...]'})"
        self.prefixes = {k: _compile_filter(k, v, self.where) for k, v in prefixes.items()}

    def flatten(self):
        """The included routes, recursively flattened, with the prefixes joined on."""
        routing = _resolve_routing(self.routing, self.where)
        out = []
        for entry in routing:
            for r in _flatten_entry(entry, self.where):
                out.append(r.with_prefixes(self.prefixes, f"{self.where} of {r!r}")
                           if self.prefixes else r)
        return out

    def __repr__(self):
        filters = "".join(f", {k}={v.pattern!r}" for k, v in self.prefixes.items())
        return f"{self.where[:-1]}{filters})"


route = Route
route_class = RouteClass
include = Include


def _resolve_routing(routing, where):
    if isinstance(routing, str):
        try:
            routing = _import_string(routing)
        except ImportError as e:
            raise RoutingError(f"{where}: cannot import routing {routing!r}: {e}") from e
    if isinstance(routing, dict):
        # Channels 0.x style: {channel: consumer}
        routing = [Route(channel, consumer) for channel, consumer in routing.items()]
    if not isinstance(routing, (list, tuple)):
        raise RoutingError(f"{where}: a routing must be a list of route()/include(), not {routing!r}")
    return routing


def _flatten_entry(entry, where):
    flatten = getattr(entry, "flatten", None)
    if flatten is None:
        raise RoutingError(f"{where}: {entry!r} is not a route(), route_class() or include()")
    return flatten()


async def _noop_consumer(message, **kwargs):
    """
    Default consumer: does nothing (``websocket.receive``/``disconnect``,
    ``http.disconnect``; for ``websocket.connect`` the worker's implicit
    accept answers). ``async`` so it runs on the reactor, not in a thread.
    """


def default_routing():
    """
    The routes appended after every project's routing (contract section 3),
    plus ``http.disconnect`` → stop a response still streaming to that
    client from this process (and so those notices don't sit in the layer
    until they expire).
    """
    return [
        Route("http.request", "chanserve.handler.view_consumer"),
        Route("websocket.connect", _noop_consumer),
        Route("websocket.receive", _noop_consumer),
        Route("websocket.disconnect", _noop_consumer),
        Route("http.disconnect", "chanserve.handler.disconnect_consumer"),
    ]


class Router:
    """
    A flattened routing: ``match(channel, content)`` returns the first
    matching ``(consumer, kwargs)`` or ``None``.

    With ``defaults`` the default routes are appended. Candidates are
    precomputed per channel, so a match only looks at the routes of its
    channel.
    """

    def __init__(self, routing, defaults=True, name="routing"):
        routes = []
        for entry in _resolve_routing(routing, name):
            routes.extend(_flatten_entry(entry, name))
        if defaults:
            routes.extend(default_routing())
        self.routes = [r.resolve() for r in routes]
        self._by_channel = {}
        for r in self.routes:
            for channel in r.channels:
                self._by_channel.setdefault(channel, []).append(r)

    @property
    def channels(self):
        """Every channel some route consumes (in first-seen order)."""
        return list(self._by_channel)

    def candidates(self, channel):
        """The routes of ``channel``, in order."""
        return self._by_channel.get(channel, ())

    def match(self, channel, content):
        """The first ``(consumer, kwargs)`` for a message on ``channel``, or ``None``."""
        key = channel
        i = channel.find("!")
        if i >= 0:
            key = channel[: i + 1]
        for r in self._by_channel.get(key, ()):
            result = r.match(content)
            if result is not None:
                return result
        return None


def load_routing(alias="default", defaults=True):
    """
    The ``Router`` for ``CHANNEL_LAYERS[alias]["ROUTING"]``.

    A missing ``ROUTING`` means only the default routes. Any problem is one
    ``ImproperlyConfigured`` naming the setting.
    """
    from django.core.exceptions import ImproperlyConfigured

    from .layers import layer_settings
    setting = f"CHANNEL_LAYERS[{alias!r}]['ROUTING']"
    path = layer_settings(alias).get("ROUTING")
    if path is None:
        return Router([], defaults=defaults)
    try:
        if isinstance(path, str):
            try:
                routing = _import_string(path)
            except ImportError as e:
                raise RoutingError(f"cannot import {path!r}: {e}") from e
        else:
            routing = path
        return Router(routing, defaults=defaults, name=repr(path) if isinstance(path, str) else "routing")
    except RoutingError as e:
        raise ImproperlyConfigured(f"{setting}: {e}") from e
    except Exception as e:
        # An error raised while importing the user's routing or consumers.
        raise ImproperlyConfigured(
            f"{setting}: loading {path!r} failed: {type(e).__name__}: {e}") from e
