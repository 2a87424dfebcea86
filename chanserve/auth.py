"""
Django authentication for consumers: ``message.user``.

``http_session_user`` reads the user from the visitor's HTTP session (only
the connect message of a WebSocket carries cookies); ``channel_session_user``
reads it from the channel session; ``channel_session_user_from_http`` (for
``websocket.connect``) copies the login from the first into the second, so
later messages of the socket know who sent them.
"""

import functools
from types import SimpleNamespace

from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

from .sessions import _plain_consumer, channel_and_http_session, channel_session, http_session

__all__ = [
    "channel_and_http_session_user_from_http",
    "channel_session_user",
    "channel_session_user_from_http",
    "get_session_user",
    "http_session_user",
    "transfer_user",
]

_USER_KEYS = (SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY)


def get_session_user(session):
    """
    The user logged in to ``session``, else an ``AnonymousUser``.

    Django's own ``auth.get_user``: the backend must still be configured and
    the session hash must match (a changed password logs the socket out).
    """
    if session is None:
        from django.contrib.auth.models import AnonymousUser
        return AnonymousUser()
    return auth.get_user(SimpleNamespace(session=session))


def transfer_user(from_session, to_session):
    """
    Copy the login of ``from_session`` into ``to_session``.

    When ``from_session`` has no login (or is ``None``), any login in
    ``to_session`` is removed, so the copy never leaves a stale user behind.
    """
    if from_session is not None and all(k in from_session for k in _USER_KEYS):
        for key in _USER_KEYS:
            if to_session.get(key) != from_session[key]:
                to_session[key] = from_session[key]
        return
    for key in _USER_KEYS:
        if key in to_session:
            del to_session[key]


def http_session_user(func):
    """Give the consumer ``message.http_session`` and ``message.user`` from it."""
    _plain_consumer(func, "http_session_user")
    @http_session
    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        message.user = get_session_user(message.http_session)
        return func(message, *args, **kwargs)
    return inner


def channel_session_user(func):
    """Give the consumer ``message.channel_session`` and ``message.user`` from it."""
    _plain_consumer(func, "channel_session_user")
    @channel_session
    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        message.user = get_session_user(message.channel_session)
        return func(message, *args, **kwargs)
    return inner


def channel_session_user_from_http(func):
    """
    For ``websocket.connect``: ``message.user`` from the HTTP session, copied
    into the channel session for the socket's later messages.
    """
    _plain_consumer(func, "channel_session_user_from_http")
    @http_session_user
    @channel_session
    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        transfer_user(message.http_session, message.channel_session)
        return func(message, *args, **kwargs)
    return inner


def channel_and_http_session_user_from_http(func):
    """
    ``channel_session_user_from_http`` that also keeps the HTTP session for
    the socket's later messages (see ``channel_and_http_session``).
    """
    _plain_consumer(func, "channel_and_http_session_user_from_http")
    @http_session_user
    @channel_and_http_session
    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        transfer_user(message.http_session, message.channel_session)
        return func(message, *args, **kwargs)
    return inner
