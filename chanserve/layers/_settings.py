"""Building channel layers from Django's ``CHANNEL_LAYERS`` setting."""

import importlib
import threading

DEFAULT_CHANNEL_LAYER = "default"

BACKEND_ALIASES = {
    "asgiref.inmemory.ChannelLayer": "chanserve.layers.InMemoryChannelLayer",
    "asgi_redis.RedisChannelLayer": "chanserve.layers.RedisChannelLayer",
    "asgi_redis.RedisLocalChannelLayer": "chanserve.layers.RedisChannelLayer",
}


def _improperly_configured(message):
    from django.core.exceptions import ImproperlyConfigured
    return ImproperlyConfigured(message)


def layer_settings(alias=DEFAULT_CHANNEL_LAYER):
    """The ``CHANNEL_LAYERS[alias]`` dict, checked; raises ``ImproperlyConfigured``."""
    from django.conf import settings
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not layers:
        raise _improperly_configured(
            "CHANNEL_LAYERS is not set: define CHANNEL_LAYERS = "
            "{'default': {'BACKEND': 'chanserve.layers.InMemoryChannelLayer', "
            "'ROUTING': 'myproject.routing.channel_routing'}} in your settings")
    if not isinstance(layers, dict):
        raise _improperly_configured("CHANNEL_LAYERS must be a dict of alias -> layer settings")
    if alias not in layers:
        raise _improperly_configured(
            f"CHANNEL_LAYERS has no layer {alias!r} (it has: {', '.join(sorted(layers)) or 'none'})")
    conf = layers[alias]
    if not isinstance(conf, dict):
        raise _improperly_configured(f"CHANNEL_LAYERS[{alias!r}] must be a dict")
    if "BACKEND" not in conf:
        raise _improperly_configured(f"CHANNEL_LAYERS[{alias!r}]['BACKEND'] is missing")
    config = conf.get("CONFIG", {})
    if not isinstance(config, dict):
        raise _improperly_configured(f"CHANNEL_LAYERS[{alias!r}]['CONFIG'] must be a dict")
    return conf


def import_backend(alias, path):
    """The layer class named by ``CHANNEL_LAYERS[alias]['BACKEND']``."""
    setting = f"CHANNEL_LAYERS[{alias!r}]['BACKEND']"
    if not isinstance(path, str) or "." not in path:
        raise _improperly_configured(f"{setting} must be a dotted path, not {path!r}")
    path = BACKEND_ALIASES.get(path, path)
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise _improperly_configured(f"{setting}: cannot import {path!r}: {e}") from e


def build_channel_layer(alias=DEFAULT_CHANNEL_LAYER, reactor=None):
    """A new layer built from ``CHANNEL_LAYERS[alias]`` (not registered)."""
    conf = layer_settings(alias)
    cls = import_backend(alias, conf["BACKEND"])
    config = dict(conf.get("CONFIG", {}))
    try:
        layer = cls(reactor=reactor, **config)
    except (TypeError, ValueError) as e:
        raise _improperly_configured(f"CHANNEL_LAYERS[{alias!r}]['CONFIG']: {e}") from e
    layer.alias = alias
    return layer


class ChannelLayerRegistry:
    """The layer of each alias in this process; the server and user code share them."""

    def __init__(self):
        self._layers = {}
        self._lock = threading.Lock()

    def register(self, alias, layer):
        """Make ``layer`` the one ``get_channel_layer(alias)`` returns."""
        with self._lock:
            self._layers[alias] = layer
            layer.alias = alias

    def unregister(self, alias):
        with self._lock:
            self._layers.pop(alias, None)

    def __getitem__(self, alias):
        try:
            return self._layers[alias]
        except KeyError:
            pass
        with self._lock:
            if alias not in self._layers:
                self._layers[alias] = build_channel_layer(alias)
            return self._layers[alias]


channel_layers = ChannelLayerRegistry()


def get_channel_layer(alias=DEFAULT_CHANNEL_LAYER):
    """The channel layer this process uses for ``alias`` (built from settings on first use)."""
    return channel_layers[alias]
