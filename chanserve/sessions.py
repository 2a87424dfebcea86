"""
Sessions and ordering for consumers.

``channel_session`` gives a consumer ``message.channel_session``, a Django
session keyed by a digest of the message's reply channel, so it lives as
long as the connection. ``http_session`` gives ``message.http_session``, the
visitor's existing Django session from the connect message's cookie (or a
``session_key`` query parameter). ``enforce_ordering`` runs the messages of
one socket in their ``order``.

State lives in the session engine named by ``CHANNEL_SESSION_ENGINE``
(default ``SESSION_ENGINE``), so it is shared by every worker thread and
every worker process that shares that store.
"""

import base64
import functools
import hashlib
import inspect
import threading
from importlib import import_module

import msgpack
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.http import QueryDict
from django.http.cookie import parse_cookie
from twisted.logger import Logger
from twisted.python import threadable

from .channel import Channel, flush_held_sends
from .exceptions import ConsumeLater

__all__ = [
    "channel_session",
    "http_session",
    "channel_and_http_session",
    "enforce_ordering",
    "session_for_reply_channel",
    "get_channel_session_engine",
]

_log = Logger(namespace="chanserve.sessions")

_SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"
_DISCONNECT = "websocket.disconnect"

#: Seconds a message parked by ``enforce_ordering`` waits for its predecessor
#: before the socket is closed (``CHANNEL_ORDERING_TIMEOUT`` overrides it).
DEFAULT_ORDERING_TIMEOUT = 60.0


# -- engines ---------------------------------------------------------------


def get_channel_session_engine():
    """
    The session engine module channel sessions use.

    ``CHANNEL_SESSION_ENGINE``, else ``SESSION_ENGINE``. A signed-cookie
    engine can't be written by a consumer, so it raises
    ``ImproperlyConfigured``.
    """
    path = getattr(settings, "CHANNEL_SESSION_ENGINE", None) or settings.SESSION_ENGINE
    setting = "CHANNEL_SESSION_ENGINE" if getattr(settings, "CHANNEL_SESSION_ENGINE", None) \
        else "SESSION_ENGINE"
    try:
        engine = import_module(path)
    except ImportError as e:
        raise ImproperlyConfigured(f"{setting}: cannot import {path!r}: {e}") from e
    store = getattr(engine, "SessionStore", None)
    if not isinstance(store, type):
        raise ImproperlyConfigured(f"{setting} is {path!r}, which has no SessionStore class")
    signed = import_module(_SIGNED_COOKIES)
    if engine is signed or issubclass(store, signed.SessionStore):
        raise ImproperlyConfigured(
            f"{setting} is {path!r}: channel sessions need a session engine they can "
            "write to (db, cache, cached_db, file), not signed cookies; set "
            "CHANNEL_SESSION_ENGINE to one of those")
    return engine


_store_classes = {}
_store_classes_lock = threading.Lock()


def _store_class(engine, mixin):
    """A subclass of ``engine.SessionStore`` with ``mixin`` (built once per pair)."""
    base = engine.SessionStore
    key = (base, mixin)
    cls = _store_classes.get(key)
    if cls is None:
        with _store_classes_lock:
            cls = _store_classes.get(key)
            if cls is None:
                # Same __qualname__: Django salts the session signature with it.
                cls = type(base.__name__, (mixin, base), {
                    "__qualname__": base.__qualname__, "__module__": base.__module__})
                _store_classes[key] = cls
    return cls


class _ChannelSessionMixin:
    """
    A session whose key is fixed: the digest of a reply channel.

    Django's stores forget a key that isn't stored yet and invent a random
    one on ``save``, ``flush`` and ``cycle_key``; a channel session keeps
    its key and creates its record on first save.
    """

    def __init__(self, session_key=None):
        super().__init__(session_key)
        self._channel_key = session_key

    def load(self):
        data = super().load()
        self._session_key = self._channel_key
        return data

    def save(self, must_create=False):
        self._session_key = self._channel_key
        if must_create:
            return super().save(must_create=True)
        try:
            super().save(must_create=False)
        except UpdateError:
            # Not stored yet (or removed meanwhile): create it; if another
            # consumer of the same socket just did, update theirs.
            try:
                super().save(must_create=True)
            except CreateError:
                super().save(must_create=False)

    def flush(self):
        """Empty the session and remove its record; the key stays."""
        self.clear()
        self.delete(self._channel_key)
        self._session_key = self._channel_key

    def cycle_key(self):
        """A channel session's key is its reply channel's: keep it, keep the data."""
        self.modified = True


class _HttpSessionMixin:
    """An existing HTTP session read by a consumer: it never gets a new key."""

    def cycle_key(self):
        # Only an HTTP response can give the client a new cookie; keep the
        # key and the data (Django calls this when rotating secrets).
        self.modified = True

    def save(self, must_create=False):
        if self.session_key is None:
            # Flushed by the consumer: don't invent a session no client has.
            return
        try:
            super().save(must_create=must_create)
        except UpdateError:
            _log.warn("HTTP session was removed while a consumer used it; not recreated")


def _digest(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def channel_session_key(reply_channel):
    """
    The session key of a reply channel (a name or ``Channel``).

    A SHA-256 digest of the name: as unguessable as the reply channel name
    itself (at least 96 random bits).
    """
    name = getattr(reply_channel, "name", reply_channel)
    return "chn" + _digest("channel-session", name)[:37]


def session_for_reply_channel(reply_channel, engine=None, load=True):
    """The channel session of a reply channel (a name or ``Channel``)."""
    engine = engine if engine is not None else get_channel_session_engine()
    session = _store_class(engine, _ChannelSessionMixin)(channel_session_key(reply_channel))
    if load:
        session._get_session()
    return session


# -- channel_session --------------------------------------------------------


def _plain_consumer(func, decorator):
    """Refuse ``async def`` consumers: sessions use the ORM, in worker threads."""
    if inspect.iscoroutinefunction(func):
        raise TypeError(
            f"@{decorator} works on plain consumer functions (run in the worker's threads), "
            f"not on the async def {getattr(func, '__qualname__', func)!r}")
    return func


def channel_session(func):
    """
    Give the consumer ``message.channel_session``, a session tied to its reply channel.

    Saved after the consumer returns if it was modified (not when it
    raises); removed after a ``websocket.disconnect`` consumer. Applied
    several times (through the auth decorators too), the outermost one
    loads and saves it.
    """
    _plain_consumer(func, "channel_session")

    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        if getattr(message, _SESSION_ACTIVE, False):
            return func(message, *args, **kwargs)
        if not message.reply_channel:
            raise ValueError(
                f"@channel_session needs a message with a reply_channel; "
                f"{message.channel.name!r} messages have none")
        # Loaded on first use: a consumer that doesn't touch it costs no query.
        session = session_for_reply_channel(message.reply_channel, load=False)
        message.channel_session = session
        setattr(message, _SESSION_ACTIVE, True)
        try:
            result = func(message, *args, **kwargs)
        finally:
            setattr(message, _SESSION_ACTIVE, False)
        _persist_channel_session(session, message.channel.name)
        return result
    return inner


# Set on a message while an outer @channel_session runs its consumer.
_SESSION_ACTIVE = "_chanserve_channel_session_active"


def _persist_channel_session(session, channel_name):
    if channel_name == _DISCONNECT:
        # The socket is gone: so is its session.
        session.delete(session._channel_key)
    elif session.modified:
        if not session.keys():
            session.delete(session._channel_key)
        else:
            session.save()


# -- http_session -----------------------------------------------------------


def _header_values(content, name):
    values = []
    for header in content.get("headers") or ():
        try:
            key, value = header[0], header[1]
        except (IndexError, TypeError):
            continue
        if isinstance(key, str):
            key = key.encode("latin-1")
        if key.lower() == name:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return values


def http_session_key(content):
    """
    The Django session key a connect (or HTTP) message carries, or ``None``.

    The ``session_key`` query parameter wins over the session cookie
    (``SESSION_COOKIE_NAME``).
    """
    query = content.get("query_string") or b""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    key = QueryDict(query).get("session_key")
    if key:
        return key
    cookies = _header_values(content, b"cookie")
    if cookies:
        return parse_cookie("; ".join(cookies)).get(settings.SESSION_COOKIE_NAME) or None
    return None


def session_for_http(content):
    """The existing Django session named by a message's cookie or query, or ``None``."""
    key = http_session_key(content)
    if not key:
        return None
    engine = import_module(settings.SESSION_ENGINE)
    session = _store_class(engine, _HttpSessionMixin)(session_key=key)
    # Loading forgets a key that isn't stored (or has expired).
    session._get_session()
    if session.session_key is None:
        return None
    return session


def http_session(func):
    """
    Give the consumer ``message.http_session``: the visitor's Django session, or ``None``.

    Read from the connect message's session cookie or its ``session_key``
    query parameter; only an existing session is loaded (an unknown key
    never creates one). Saved after the consumer if it modified it.
    """
    _plain_consumer(func, "http_session")

    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        if hasattr(message, "http_session"):
            return func(message, *args, **kwargs)
        session = session_for_http(message.content)
        message.http_session = session
        result = func(message, *args, **kwargs)
        if session is not None and session.modified:
            session.save()
        return result
    return inner


def channel_and_http_session(func):
    """
    Both sessions; the HTTP session key is kept in the channel session on
    connect so later messages of the socket get ``message.http_session`` too.
    """
    _plain_consumer(func, "channel_and_http_session")
    @http_session
    @channel_session
    @functools.wraps(func)
    def inner(message, *args, **kwargs):
        name = settings.SESSION_COOKIE_NAME
        if message.http_session is not None:
            if message.channel_session.get(name) != message.http_session.session_key:
                message.channel_session[name] = message.http_session.session_key
        elif name in message.channel_session:
            message.http_session = session_for_http(
                {"query_string": b"session_key=" + message.channel_session[name].encode("ascii")})
        return func(message, *args, **kwargs)
    return inner


# -- enforce_ordering -------------------------------------------------------


def _encode_content(content):
    return base64.b64encode(msgpack.packb(content, use_bin_type=True)).decode("ascii")


def _decode_content(text):
    return msgpack.unpackb(base64.b64decode(text), raw=False)


class _Markers:
    """
    Small records in the channel session engine marking a socket's progress.

    ``done``: message n finished; ``park``: message n waits (holds the
    message); ``claim``: someone is moving parked message n back onto its
    channel. Each is created atomically (``save(must_create=True)``), so
    threads and processes sharing the store agree without locks.
    """

    def __init__(self, engine, reply_name):
        self._engine = engine
        self._reply = reply_name

    def key(self, kind, n):
        return "cho" + _digest("ordering", kind, n, self._reply)[:37]

    def _store(self, kind, n):
        return self._engine.SessionStore(session_key=self.key(kind, n))

    def exists(self, kind, n):
        return self._store(kind, n).exists(self.key(kind, n))

    def create(self, kind, n, data=None):
        """Create the marker; ``False`` if it already exists."""
        store = self._store(kind, n)
        store._session_cache = dict(data or {"n": n})
        try:
            store.save(must_create=True)
        except CreateError:
            return False
        return True

    def load(self, kind, n):
        """The marker's data, or ``None`` when there is no such marker."""
        store = self._store(kind, n)
        data = store.load()
        if store.session_key is None:
            return None
        return data

    def delete(self, kind, n):
        store = self._store(kind, n)
        store.delete(self.key(kind, n))

    def expire_soon(self, kind, n, seconds):
        """Keep the marker, but let the store drop it after ``seconds``."""
        store = self._store(kind, n)
        data = store.load()
        if store.session_key is None:
            return
        store._session_cache = data
        store.set_expiry(int(seconds) or 1)
        try:
            store.save()
        except UpdateError:
            pass


class _Timers:
    """The DelayedCalls of messages parked by this process, by marker key."""

    def __init__(self):
        self._calls = {}
        self._lock = threading.Lock()

    def arm(self, reactor, key, seconds, check):
        def schedule():
            call = reactor.callLater(seconds, fire)
            with self._lock:
                old = self._calls.get(key)
                self._calls[key] = call
            if old is not None and old.active():
                old.cancel()

        def fire():
            with self._lock:
                self._calls.pop(key, None)
            call_in_thread = getattr(reactor, "callInThread", None)
            if call_in_thread is not None:
                call_in_thread(_log_errors, check)
            else:
                _log_errors(check)

        _on_reactor(reactor, schedule)

    def cancel(self, reactor, key):
        def cancel():
            with self._lock:
                call = self._calls.pop(key, None)
            if call is not None and call.active():
                call.cancel()
        _on_reactor(reactor, cancel)

    def pending(self):
        with self._lock:
            return len(self._calls)


_timers = _Timers()


def _on_reactor(reactor, f):
    if threadable.isInIOThread() or not hasattr(reactor, "callFromThread"):
        f()
    else:
        reactor.callFromThread(f)


def _log_errors(f):
    try:
        f()
    except Exception:
        _log.failure("enforce_ordering: checking a parked message failed")
    finally:
        if not threadable.isInIOThread():
            from django.db import close_old_connections
            close_old_connections()


# A message behind a parked predecessor waits at most this many timeouts.
_CHAIN_WAITS = 3


def _ordering_timeout():
    return float(getattr(settings, "CHANNEL_ORDERING_TIMEOUT", DEFAULT_ORDERING_TIMEOUT))


class _Ordering:
    """The ordering of one socket's messages, as seen while handling one of them."""

    _log = Logger()

    def __init__(self, message, slight, timeout):
        self.message = message
        self.slight = slight
        self.timeout = timeout
        self.layer = message.channel_layer
        self.reply = message.reply_channel.name
        self.markers = _Markers(get_channel_session_engine(), self.reply)

    def predecessor(self, order):
        """The message that must be done before ``order`` runs (None: nothing)."""
        if order == 0:
            return None
        return 0 if self.slight else order - 1

    def may_run(self, order):
        pred = self.predecessor(order)
        return pred is None or self.markers.exists("done", pred)

    def finished(self, order, held=True):
        """``order`` is done: record it and move its parked successors back."""
        disconnect = self.message.channel.name == _DISCONNECT
        if disconnect:
            self.markers.delete("closed", 0)
        if self.slight:
            if disconnect:
                self.markers.expire_soon("done", 0, self.timeout)
                return
            if order == 0:
                self.markers.create("done", 0)
            # Messages parked before the connect finished, that neither the
            # connect's scan (which stops at a message that never parked)
            # nor their own re-check released, are found from here.
            self.release_from(order + 1, held)
            return
        if not disconnect:
            if not self.markers.create("done", order):
                self._log.warn("Message {order} of {reply} ran twice",
                               order=order, reply=self.reply)
        if order > 0:
            self.markers.delete("done", order - 1)
        if not disconnect:
            self.release_from(order + 1, held)

    def release_from(self, order, held=True):
        """Move parked messages ``order``, ``order+1``... back (strict: just one)."""
        while self.markers.exists("park", order):
            self.release(order, held)
            if not self.slight:
                return
            order += 1

    def release(self, order, held=True):
        """Move parked message ``order`` back onto its channel (once, whoever asks)."""
        data = self.take(order)
        if data is None:
            return False
        Channel(data["channel"], channel_layer=self.layer).send(
            _decode_content(data["content"]), immediately=not held)
        return True

    def park(self, order):
        """Store an out-of-order message until its predecessor is done."""
        message = self.message
        pred = self.predecessor(order)
        data = {"channel": message.channel.name, "content": _encode_content(message.content)}
        if not self.markers.create("park", order, data):
            self._log.warn("Message {order} of {reply} is already waiting; dropping this copy",
                      order=order, reply=self.reply)
            return
        _timers.arm(self.layer.reactor, self.markers.key("park", order), self.timeout,
                    functools.partial(self.check_parked, order, self.layer.reactor.seconds()))
        # The predecessor may have finished while we parked: look again.
        if self.markers.exists("done", pred):
            if self.release(order):
                if self.slight:
                    self.release_from(order + 1)

    def check_parked(self, order, parked_at):
        """
        A parked message's time is up: release it if its predecessor is done;
        wait on if the predecessor is itself parked (the head of the chain
        decides; but not past ``_CHAIN_WAITS`` timeouts, in case the head's
        process died with its timer); else close the socket (once) and drop
        what waits.
        """
        markers = self.markers
        if not markers.exists("park", order):
            return
        pred = self.predecessor(order)
        if markers.exists("done", pred):
            if self.release(order, held=False):
                self._log.warn("Message {order} of {reply} was released only by its timeout "
                          "(message {pred} finished without releasing it)",
                          order=order, reply=self.reply, pred=pred)
            return
        closed = markers.exists("closed", 0)
        waited = self.layer.reactor.seconds() - parked_at
        if (not closed and waited < _CHAIN_WAITS * self.timeout
                and markers.exists("park", pred)):
            _timers.arm(self.layer.reactor, markers.key("park", order), self.timeout,
                        functools.partial(self.check_parked, order, parked_at))
            return
        data = self.take(order)
        if data is None:
            return
        if data["channel"] == _DISCONNECT:
            # The socket is gone already: let its disconnect consumer clean up.
            self._log.warn(
                "Message {pred} of {reply} never finished; running its disconnect (message "
                "{order}) without it (enforce_ordering)",
                reply=self.reply, order=order, pred=pred)
            markers.create("done", pred)
            Channel(data["channel"], channel_layer=self.layer).send(
                _decode_content(data["content"]), immediately=True)
            return
        if closed or not markers.create("closed", 0):
            self._log.debug("Dropping message {order} of {reply}: the socket was closed for "
                       "a missing message", order=order, reply=self.reply)
            return
        self._log.warn(
            "Closing {reply}: message {order} on {channel} waited {timeout}s for message "
            "{pred}, which never finished (enforce_ordering; was it lost, or is its consumer "
            "not decorated with @enforce_ordering too?)",
            reply=self.reply, order=order, channel=data["channel"], timeout=self.timeout,
            pred=pred)
        d = Channel(self.reply, channel_layer=self.layer).send({"close": 1011}, immediately=True)
        if d is not None and hasattr(d, "addErrback"):
            d.addErrback(lambda f: self._log.failure(
                "Could not close {reply}", f, reply=self.reply))

    def take(self, order):
        """Remove parked message ``order`` (once, whoever asks): its data, or None."""
        markers = self.markers
        if not markers.create("claim", order):
            return None
        try:
            data = markers.load("park", order)
            if data is not None:
                markers.delete("park", order)
        finally:
            markers.delete("claim", order)
        _timers.cancel(self.layer.reactor, markers.key("park", order))
        return data


def _message_order(message):
    if "order" not in message.content:
        raise ValueError(
            f"@enforce_ordering needs messages with an 'order'; {message.channel.name!r} "
            "messages have none")
    if not message.reply_channel:
        raise ValueError(
            f"@enforce_ordering needs messages with a reply_channel; {message.channel.name!r} "
            "messages have none")
    try:
        return int(message.content["order"])
    except (TypeError, ValueError):
        raise ValueError(f"Message 'order' must be an int, not {message.content['order']!r}")


def enforce_ordering(func=None, slight=False, *, timeout=None):
    """
    Run a socket's messages in their ``order``.

    Strict (``@enforce_ordering`` or ``@enforce_ordering()``): message n
    runs only after message n-1 finished. ``slight=True``: only
    ``websocket.connect`` (order 0) must finish before the others run.

    A message that comes too early is parked in the channel session engine
    (no worker waits for it) and put back on its channel the moment its
    predecessor finishes. If the predecessor doesn't finish within
    ``timeout`` seconds (``CHANNEL_ORDERING_TIMEOUT``, default 60) the socket
    is closed (code 1011) and the reason logged; make it longer than your
    slowest consumer runs. A message queued behind other parked messages
    waits as long as they can still move, up to three timeouts. The
    consumer gets ``message.channel_session``, loaded after its predecessor
    saved it.

    Every consumer of the socket's messages must be decorated (the
    ``websocket.connect`` one at least, in slight mode): only decorated
    consumers record that a message finished. Ordering state lives in the
    channel session engine; a cache engine that evicts entries can lose a
    parked message (its socket is then closed after the timeout), so prefer
    ``db`` or ``cached_db`` for ordering.
    """
    def decorator(func):
        _plain_consumer(func, "enforce_ordering")
        wrapped = channel_session(func)

        @functools.wraps(func)
        def inner(message, *args, **kwargs):
            order = _message_order(message)
            ordering = _Ordering(
                message, slight, _ordering_timeout() if timeout is None else float(timeout))
            if not ordering.may_run(order):
                ordering.park(order)
                return None
            if getattr(message, _SESSION_ACTIVE, False):
                # An outer @channel_session loaded it before the predecessor
                # may have saved: read it again.
                message.channel_session.__dict__.pop("_session_cache", None)
            try:
                result = wrapped(message, *args, **kwargs)
            except ConsumeLater:
                # It will run again: not done yet.
                raise
            except BaseException:
                # Consumed, if badly: don't make its successors wait for it.
                flush_held_sends()
                ordering.finished(order, held=False)
                raise
            # Its replies go out before its successor may run, so the
            # successor's replies can't overtake them.
            flush_held_sends()
            ordering.finished(order)
            return result
        return inner

    if func is not None:
        return decorator(func)
    return decorator
