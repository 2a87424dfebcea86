"""
System checks of the ``chanserve`` app (``manage.py check``, runserver).

- ``chanserve.E001``: ``CHANNEL_LAYERS`` missing or malformed.
- ``chanserve.E002``: a layer's ``BACKEND`` cannot be imported.
- ``chanserve.E003``: a layer's ``CONFIG`` does not fit its backend.
- ``chanserve.E004``: a layer's ``ROUTING`` cannot be loaded.
- ``chanserve.E005``: ``CHANNEL_SESSION_ENGINE`` is a signed-cookie engine.
- ``chanserve.W001``: ``SESSION_ENGINE`` is signed cookies and no
  ``CHANNEL_SESSION_ENGINE`` is set, so channel sessions cannot work.
"""

import inspect

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

_SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"


@checks.register("chanserve")
def check_channel_layers(app_configs=None, **kwargs):
    """``CHANNEL_LAYERS``: present, well formed, backends importable, routings loadable."""
    from .layers._settings import import_backend, layer_settings
    from .routing import load_routing

    errors = []
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not isinstance(layers, dict) or "default" not in layers:
        try:
            layer_settings("default")
        except ImproperlyConfigured as e:
            errors.append(checks.Error(
                str(e), hint="chanserve needs a 'default' channel layer in CHANNEL_LAYERS.",
                id="chanserve.E001"))
        if not isinstance(layers, dict):
            return errors
    for alias in layers:
        try:
            conf = layer_settings(alias)
        except ImproperlyConfigured as e:
            errors.append(checks.Error(str(e), id="chanserve.E001"))
            continue
        try:
            backend = import_backend(alias, conf["BACKEND"])
        except ImproperlyConfigured as e:
            errors.append(checks.Error(
                str(e), hint="Use chanserve.layers.InMemoryChannelLayer or "
                "chanserve.layers.RedisChannelLayer.", id="chanserve.E002"))
        else:
            problem = _config_problem(backend, conf.get("CONFIG", {}))
            if problem:
                errors.append(checks.Error(
                    f"CHANNEL_LAYERS[{alias!r}]['CONFIG'] does not fit "
                    f"{conf['BACKEND']}: {problem}", id="chanserve.E003"))
        try:
            load_routing(alias)
        except ImproperlyConfigured as e:
            errors.append(checks.Error(str(e), id="chanserve.E004"))
    return errors


def _config_problem(backend, config):
    """Why ``backend(**config)`` would be refused by its signature, or None."""
    try:
        signature = inspect.signature(backend)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(**config)
    except TypeError as e:
        return str(e)
    return None


@checks.register("chanserve")
def check_session_engine(app_configs=None, **kwargs):
    """Channel sessions need a server-side session store."""
    engine = getattr(settings, "CHANNEL_SESSION_ENGINE", None)
    if engine == _SIGNED_COOKIES:
        return [checks.Error(
            "CHANNEL_SESSION_ENGINE is the signed-cookie engine; channel sessions "
            "need an engine that stores data on the server.",
            hint="Use django.contrib.sessions.backends.db, cache or cached_db.",
            id="chanserve.E005")]
    if engine is None and getattr(settings, "SESSION_ENGINE", None) == _SIGNED_COOKIES:
        return [checks.Warning(
            "SESSION_ENGINE is the signed-cookie engine and CHANNEL_SESSION_ENGINE is "
            "not set, so channel_session and the channel auth decorators cannot work.",
            hint="Set CHANNEL_SESSION_ENGINE to a server-side engine, e.g. "
            "django.contrib.sessions.backends.cache.",
            id="chanserve.W001")]
    return []
