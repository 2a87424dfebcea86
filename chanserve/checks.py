"""
System checks of the ``chanserve`` app (``manage.py check``, runserver).

- ``chanserve.E001``: ``CHANNEL_LAYERS`` missing or malformed.
- ``chanserve.E002``: a layer's ``BACKEND`` cannot be imported.
- ``chanserve.E003``: a layer's ``CONFIG`` does not fit its backend.
- ``chanserve.E004``: a layer's ``ROUTING`` cannot be loaded.
- ``chanserve.E005``: ``CHANNEL_SESSION_ENGINE`` cannot hold channel
  sessions: it is a signed-cookie engine (or a subclass of its store), or it
  cannot be imported.
- ``chanserve.W001``: no ``CHANNEL_SESSION_ENGINE`` is set and
  ``SESSION_ENGINE`` cannot hold channel sessions (the same reasons), so
  ``channel_session`` and the channel auth decorators cannot work.

The session checks ask ``chanserve.sessions.get_channel_session_engine()``,
the function the decorators use, so they refuse exactly what it refuses.
"""

import inspect

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


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
    """Channel sessions need a server-side session store they can import."""
    from .sessions import get_channel_session_engine

    try:
        get_channel_session_engine()
    except ImproperlyConfigured as e:
        problem = str(e)
    except (AttributeError, TypeError) as e:
        # A module without a usable SessionStore class.
        problem = f"the channel session engine has no usable SessionStore: {e}"
    else:
        return []
    if getattr(settings, "CHANNEL_SESSION_ENGINE", None):
        return [checks.Error(
            problem,
            hint="Use django.contrib.sessions.backends.db, cache or cached_db.",
            id="chanserve.E005")]
    return [checks.Warning(
        f"{problem}. Until then channel_session, enforce_ordering and the channel "
        "auth decorators fail.",
        hint="Set CHANNEL_SESSION_ENGINE to a server-side engine, e.g. "
        "django.contrib.sessions.backends.cached_db.",
        id="chanserve.W001")]
