"""
The Django bridge: ``AsgiRequest``, ``AsgiHandler`` and ``view_consumer``.

``view_consumer`` is the default ``http.request`` consumer: it runs in a
worker thread, builds an ``AsgiRequest`` from the message (reading a long
body lazily from its ``body_channel``), runs Django's request/response cycle
through ``AsgiHandler`` and sends the response on the reply channel, chunk by
chunk as it is produced, paced by the client's reading when the interface
server acknowledges (see ``_ReplySender``).
"""

import asyncio
import contextvars
import sys
import threading
import traceback

from django import http
from django.conf import settings
from django.core import signals
from django.core.handlers import base
from django.urls import set_script_prefix
from django.utils.functional import cached_property
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python import failure, threadable

from .channel import _held_sends
from .exceptions import ChannelFull, RequestAborted, RequestTimeout, ResponseLater
from .layers._bridge import blocking_call, ensure_reactor_thread
from .layers._validation import new_channel_name
from .worker._protocol import ABORT_RESPONSE

__all__ = ["AsgiHandler", "AsgiRequest", "disconnect_consumer", "get_view_handler",
           "set_view_handler", "view_consumer"]

_log = Logger(namespace="chanserve.handler")

# How long a reply send keeps retrying on ChannelFull: delays between tries.
_SEND_RETRY_DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

_INTERNAL_ERROR = {
    "status": 500,
    "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
    "content": b"Internal Server Error",
    "more_content": False,
}


# -- waiting on the layer from a worker thread ---------------------------------

class _WouldBlock(Exception):
    """A layer call on the reactor thread did not complete at once."""


def _on_reactor(layer, f, *args):
    """
    Run ``f(*args)`` (which returns a ``Deferred``) where the layer lives and
    return its result.

    From a worker thread this blocks until the ``Deferred`` fires. On the
    reactor thread (or with no reactor running and an in-memory layer) it
    cannot wait: the result must be there at once, else ``_WouldBlock``.
    """
    reactor = layer.reactor
    running = getattr(reactor, "running", False)
    if threadable.isInIOThread() or (not running and not layer.cross_process):
        d = f(*args)
        box = []
        d.addBoth(box.append)
        if not box:
            d.cancel()
            d.addErrback(lambda _: None)
            raise _WouldBlock(
                "the channel layer could not answer at once and this thread cannot "
                "wait for it (run Django views in a worker thread)")
        result = box[0]
        if isinstance(result, failure.Failure):
            result.raiseException()
        return result
    if not running:
        ensure_reactor_thread(reactor)
    return blocking_call(reactor, f, *args)


def _receive_within(layer, channel, timeout, clock):
    """
    Receive one message from ``channel``; fail with ``RequestTimeout`` when
    none arrives within ``timeout`` seconds of ``clock``. Reactor thread.
    """
    d = layer.receive([channel])
    if d.called or not timeout:
        return d
    timer = clock.callLater(timeout, d.cancel)

    def stop_timer(result):
        if timer.active():
            timer.cancel()
        return result

    def timed_out(f):
        f.trap(defer.CancelledError)
        raise RequestTimeout(f"no request body arrived on {channel!r} for {timeout} seconds")

    return d.addBoth(stop_timer).addErrback(timed_out)


def _send_retrying(layer, channel, content, clock, delays=_SEND_RETRY_DELAYS):
    """
    Send ``content`` on ``channel``, retrying on ``ChannelFull`` after each of
    ``delays`` (seconds of ``clock``); fails with the last ``ChannelFull``.
    Reactor thread.
    """
    d = layer.send(channel, content)
    if d.called and not isinstance(getattr(d, "result", None), failure.Failure):
        return d

    async def retry(d):
        for delay in delays:
            try:
                return await d
            except ChannelFull:
                pass
            await task.deferLater(clock, delay, lambda: None)
            d = layer.send(channel, content)
        return await d

    return defer.Deferred.fromCoroutine(retry(d))


class _RetryingSends:
    """
    Stands for a layer in ``HeldSends``: its ``send`` retries on
    ``ChannelFull`` like ``_send_retrying``.
    """

    __slots__ = ("_layer", "_clock", "reactor", "cross_process")

    def __init__(self, layer, clock):
        self._layer = layer
        self._clock = clock
        self.reactor = layer.reactor
        self.cross_process = layer.cross_process

    def send(self, channel, content):
        return _send_retrying(self._layer, channel, content, self._clock)


# -- the request -----------------------------------------------------------------

class _BodyStream:
    """
    The request body as a file-like object: ``body`` first, then the
    ``http.request.body`` chunks of ``body_channel``, fetched only when read.

    A chunk with ``closed`` raises ``RequestAborted``; no chunk for
    ``timeout`` seconds raises ``RequestTimeout``. The failure is kept in
    ``failure`` so the handler knows even when a view swallowed it.
    """

    def __init__(self, first, layer=None, channel=None, timeout=None, clock=None):
        self._buffer = bytearray(first)
        self._pos = 0
        self._layer = layer
        self._channel = channel
        self._timeout = timeout
        self._clock = clock
        self._eof = channel is None
        self.failure = None
        self.closed = False

    def _fetch(self):
        """Append the next chunk to the buffer (or reach the end)."""
        if self.failure is not None:
            raise self.failure
        try:
            _, chunk = _on_reactor(
                self._layer, _receive_within, self._layer, self._channel,
                self._timeout, self._clock or self._layer.reactor)
        except RequestAborted as e:  # RequestTimeout included
            self.failure = e
            raise
        except _WouldBlock as e:
            self.failure = RequestAborted(str(e))
            raise self.failure from None
        if chunk.get("closed"):
            self._eof = True
            self.failure = RequestAborted("the client went away before sending the whole body")
            raise self.failure
        if self._pos:
            # Drop what was read already, so the buffer holds one chunk or so.
            del self._buffer[:self._pos]
            self._pos = 0
        self._buffer += chunk.get("content") or b""
        if not chunk.get("more_content"):
            self._eof = True

    def _available(self):
        return len(self._buffer) - self._pos

    def read(self, size=-1, /):
        """Read up to ``size`` bytes (all that is left when negative or None)."""
        if size is None or size < 0:
            while not self._eof:
                self._fetch()
            size = self._available()
        else:
            while self._available() < size and not self._eof:
                self._fetch()
        data = bytes(self._buffer[self._pos:self._pos + size])
        self._pos += len(data)
        if self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        return data

    def readline(self, size=-1, /):
        """Read one line (up to ``size`` bytes)."""
        while True:
            end = self._buffer.find(b"\n", self._pos)
            if end >= 0 or self._eof or (size is not None and 0 <= size <= self._available()):
                break
            self._fetch()
        stop = len(self._buffer) if end < 0 else end + 1
        if size is not None and size >= 0:
            stop = min(stop, self._pos + size)
        data = bytes(self._buffer[self._pos:stop])
        self._pos = stop
        return data

    def seekable(self):
        return False

    def readable(self):
        return True

    def close(self):
        self.closed = True


class AsgiRequest(http.HttpRequest):
    """
    A Django ``HttpRequest`` built from an ``http.request`` message.

    ``message`` is a ``chanserve.channel.Message`` (or a plain dict, then
    there is no reply channel and no body channel to read). The body is read
    lazily: ``body`` first, then the ``body_channel`` chunks, so multipart
    uploads stream through Django's upload handlers. ``request.message`` and
    ``request.reply_channel`` are there for views.
    """

    ResponseLater = ResponseLater

    # Seconds to wait for the next body chunk before answering 408.
    body_receive_timeout = 60

    def __init__(self, message, *, clock=None):
        content = getattr(message, "content", message)
        self.message = message
        self.reply_channel = getattr(message, "reply_channel", None)
        self._post_parse_error = False
        self._read_started = False
        self.resolver_match = None

        path = content["path"]
        root_path = content.get("root_path") or ""
        if settings.FORCE_SCRIPT_NAME is not None:
            root_path = settings.FORCE_SCRIPT_NAME
        root = root_path.rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            path_info = path[len(root):]
        else:
            path_info = path
            path = root + path if root else path
        self.path_info = path_info or "/"
        self.path = path or "/"
        self.script_name = root_path
        self.method = content["method"].upper()

        raw_query = content.get("query_string") or b""
        if isinstance(raw_query, str):
            raw_query = raw_query.encode("latin-1", "replace")
        self._raw_query = raw_query
        try:
            query = raw_query.decode("utf-8")
        except UnicodeDecodeError:
            query = raw_query.decode("latin-1")
        scheme = content.get("scheme") or "http"
        self._scheme = scheme
        self.META = meta = {
            "REQUEST_METHOD": self.method,
            "QUERY_STRING": query,
            "SCRIPT_NAME": root_path,
            "PATH_INFO": self.path_info,
            "SERVER_PROTOCOL": "HTTP/%s" % (content.get("http_version") or "1.1"),
            "wsgi.url_scheme": scheme,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
        }
        client = content.get("client")
        if client:
            meta["REMOTE_ADDR"] = meta["REMOTE_HOST"] = client[0]
            meta["REMOTE_PORT"] = client[1]
        server = content.get("server")
        if server:
            meta["SERVER_NAME"] = server[0]
            meta["SERVER_PORT"] = str(server[1])
        else:
            meta["SERVER_NAME"] = "unknown"
            meta["SERVER_PORT"] = "0"
        for name, value in content.get("headers") or ():
            name = name.decode("latin-1").lower()
            # Like WSGI servers and Django's ASGI handler: a header with an
            # underscore would be ambiguous with one with a dash.
            if "_" in name:
                continue
            if name == "content-length":
                key = "CONTENT_LENGTH"
            elif name == "content-type":
                key = "CONTENT_TYPE"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            value = value.decode("latin-1")
            if key in meta:
                value = meta[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
            meta[key] = value
        self._content_type_params(meta)

        layer = getattr(message, "channel_layer", None)
        body_channel = content.get("body_channel")
        self._stream = _BodyStream(
            content.get("body") or b"",
            layer=layer if body_channel else None,
            channel=body_channel if layer is not None else None,
            timeout=self.body_receive_timeout, clock=clock)

    def _content_type_params(self, meta):
        """Set content_type, content_params and encoding (like Django's request classes)."""
        setter = getattr(super(), "_set_content_type_params", None)
        if setter is not None:
            setter(meta)
            return
        import codecs

        from django.utils.http import parse_header_parameters
        self.content_type, self.content_params = parse_header_parameters(
            meta.get("CONTENT_TYPE", ""))
        charset = self.content_params.get("charset")
        if charset:
            try:
                codecs.lookup(charset)
            except LookupError:
                pass
            else:
                self.encoding = charset

    def _get_scheme(self):
        return self._scheme

    @cached_property
    def GET(self):
        return http.QueryDict(self._raw_query, encoding=self._encoding)

    def _get_post(self):
        if not hasattr(self, "_post"):
            self._load_post_and_files()
        return self._post

    def _set_post(self, post):
        self._post = post

    def _get_files(self):
        if not hasattr(self, "_files"):
            self._load_post_and_files()
        return self._files

    POST = property(_get_post, _set_post)
    FILES = property(_get_files)

    @cached_property
    def COOKIES(self):
        return http.parse_cookie(self.META.get("HTTP_COOKIE", ""))

    @property
    def body_failure(self):
        """``RequestAborted``/``RequestTimeout`` met reading the body, or None."""
        return getattr(self._stream, "failure", None)


# -- the handler -------------------------------------------------------------------

class _ResponseLaterMarker(http.HttpResponse):
    """Stands for "no response now" while the middleware finishes."""


class AsgiHandler(base.BaseHandler):
    """
    Django's request/response cycle for ``http.request`` messages.

    Calling the handler with a message yields the ``http.response`` messages
    of the response (none for ``ResponseLater`` or a client that went away).
    ``encode_response`` turns any Django response into those messages.
    """

    request_class = AsgiRequest

    # Largest ``content`` of one response message.
    chunk_size = 256 * 1024

    def __init__(self, *, clock=None):
        super().__init__()
        self._clock = clock
        self.load_middleware()

    def __call__(self, message):
        content = getattr(message, "content", message)
        script_name = content.get("root_path") or ""
        if settings.FORCE_SCRIPT_NAME is not None:
            script_name = settings.FORCE_SCRIPT_NAME
        set_script_prefix(script_name)
        signals.request_started.send(sender=self.__class__, message=message)
        try:
            if self._clock is not None:
                request = self.request_class(message, clock=self._clock)
            else:
                request = self.request_class(message)
        except UnicodeDecodeError:
            _log.warn("Bad request (undecodable): {path!r}", path=content.get("path"))
            response = http.HttpResponseBadRequest()
            request = None
        else:
            response = self.get_response(request)
        response._handler_class = self.__class__
        try:
            failed = getattr(request, "body_failure", None)
            if isinstance(failed, RequestTimeout):
                response.close()
                response = http.HttpResponse(
                    "Request Timeout (the request body stopped arriving)",
                    status=408, content_type="text/plain; charset=utf-8")
                response._handler_class = self.__class__
            elif failed is not None or isinstance(response, _ResponseLaterMarker):
                # The client went away, or the view answers later itself.
                return
            if isinstance(response, http.FileResponse):
                response.block_size = self.chunk_size
            self._remove_content(request, response)
            yield from self.encode_response(response)
        finally:
            response.close()
            if failed is not None:
                _close_partial_uploads(request)

    @staticmethod
    def _remove_content(request, response):
        """No body for HEAD, 1xx, 204 and 304 (headers, Content-Length included, stay)."""
        status = response.status_code
        if (request is not None and request.method == "HEAD") or 100 <= status < 200 \
                or status in (204, 304):
            if response.streaming:
                response.streaming_content = []
            else:
                response.content = b""

    def _get_response(self, request):
        try:
            return super()._get_response(request)
        except ResponseLater:
            return _ResponseLaterMarker()
        except Exception:
            if getattr(request, "body_failure", None) is not None:
                # Reading the body failed; __call__ answers (408) or not at all.
                return http.HttpResponse(status=400)
            raise

    def process_exception_by_middleware(self, exception, request):
        if isinstance(exception, ResponseLater) or getattr(request, "body_failure", None) is not None:
            raise exception
        return super().process_exception_by_middleware(exception, request)

    @classmethod
    def encode_response(cls, response):
        """
        Yield the ``http.response`` messages of a Django response.

        The first has ``status`` and ``headers`` (every ``Set-Cookie`` kept);
        ``content`` comes in chunks of at most ``chunk_size`` bytes with
        ``more_content``. A streaming response is read part by part as it
        is produced, then closed by an empty last message; one over an
        asynchronous iterator too (stepped on an event loop of its own,
        one part at a time), where Django's own iteration would gather it
        all first.
        """
        headers = [[_header_bytes(k, "ascii"), _header_bytes(v, "latin-1")]
                   for k, v in response.items()]
        for cookie in response.cookies.values():
            headers.append([b"Set-Cookie", cookie.output(header="").strip().encode("latin-1")])
        message = {"status": response.status_code, "headers": headers}
        if response.streaming:
            message["content"] = b""
            message["more_content"] = True
            yield message
            parts = _async_parts(response) if getattr(response, "is_async", False) else response
            try:
                for part in parts:
                    for chunk, _ in cls.chunk_bytes(part):
                        if chunk:
                            yield {"content": chunk, "more_content": True}
            finally:
                if parts is not response:
                    parts.close()
            yield {"content": b"", "more_content": False}
        else:
            for chunk, last in cls.chunk_bytes(response.content):
                message["content"] = chunk
                message["more_content"] = not last
                yield message
                message = {}

    @classmethod
    def chunk_bytes(cls, data):
        """Yield ``(chunk, last)`` pieces of ``data`` of at most ``chunk_size`` bytes."""
        if not data:
            yield b"", True
            return
        data = bytes(data) if not isinstance(data, bytes) else data
        size = cls.chunk_size
        for position in range(0, len(data), size):
            yield data[position:position + size], position + size >= len(data)


def _close_partial_uploads(request):
    """
    Close the file each upload handler was writing when the body stopped
    arriving. Django closes only the files it completed, and a handler and
    its request refer to each other, so the file (a temporary file on disk
    for a large upload) would stay until a garbage collection.
    """
    for handler in getattr(request, "_upload_handlers", ()):
        file = getattr(handler, "file", None)  # Django's own _close_files assumes this name
        if file is not None:
            try:
                file.close()
            except Exception:
                _log.failure("Could not close a partial upload")


def _async_parts(response):
    """
    The parts of a streaming response over an asynchronous iterator, each
    as soon as it is produced. A worker thread runs no event loop, so the
    steps run on one of the response's own, all in one ``contextvars``
    context (as one task would), with a ``ThreadSensitiveContext`` of its
    own: the iterator's ``sync_to_async`` calls (the ORM) share one thread
    per response, whose database connections are closed at the end.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # on a thread with a running loop (an asyncio reactor): Django gathers it
        yield from response
        return
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.db import connections

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_log_loop_error)
    context = contextvars.copy_context()

    async def awaited(awaitable):
        return await awaitable

    def step(awaitable):
        return loop.run_until_complete(loop.create_task(awaited(awaitable), context=context))

    sync_threads = ThreadSensitiveContext()
    step(sync_threads.__aenter__())
    iterator = response.streaming_content.__aiter__()
    try:
        while True:
            try:
                part = step(iterator.__anext__())
            except StopAsyncIteration:
                return
            yield part
    finally:
        aclose = getattr(iterator, "aclose", None)
        # Each runs whatever the one before did: the last one ends the thread.
        for cleanup in (aclose, loop.shutdown_asyncgens, sync_to_async(connections.close_all),
                        lambda: sync_threads.__aexit__(None, None, None)):
            if cleanup is not None:
                try:
                    step(cleanup())
                except Exception:
                    _log.failure("Error closing a streaming response")
        loop.close()


def _log_loop_error(loop, context):
    """An error asyncio can only report (an async generator failing as it is closed)."""
    exception = context.get("exception")
    if exception is not None:
        _log.failure("Streaming response: {message}",
                     failure.Failure(exception, type(exception), exception.__traceback__),
                     message=context.get("message"))
    else:
        _log.error("Streaming response: {message}", message=context.get("message"))


def _header_bytes(value, encoding):
    return value if isinstance(value, bytes) else str(value).encode(encoding)


# -- the default http.request consumer -------------------------------------------

_handler = None
_handler_lock = threading.Lock()


def get_view_handler():
    """The ``AsgiHandler`` ``view_consumer`` uses (built on first use)."""
    global _handler
    if _handler is None:
        with _handler_lock:
            if _handler is None:
                _handler = AsgiHandler()
    return _handler


def set_view_handler(handler):
    """
    Make ``view_consumer`` use ``handler`` (a callable like ``AsgiHandler``
    that yields response messages); ``None`` goes back to the default.
    ``runserver`` uses it to serve static files.
    """
    global _handler
    with _handler_lock:
        _handler = handler


class _GoneClients:
    """
    Reply channels whose HTTP client went away before its response ended
    (``http.disconnect`` seen in this process); bounded, oldest forgotten.
    """

    def __init__(self, limit=10000):
        self._names = {}
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, name):
        with self._lock:
            self._names[name] = None
            if len(self._names) > self._limit:
                del self._names[next(iter(self._names))]

    def __contains__(self, name):
        return name in self._names

    def discard(self, name):
        with self._lock:
            self._names.pop(name, None)


_gone = _GoneClients()


async def disconnect_consumer(message):
    """
    An ``http.disconnect`` consumer (runs on the reactor): a response still
    streaming to that client from this process stops at its next chunk.
    """
    reply = message.content.get("reply_channel")
    if isinstance(reply, str):
        _gone.add(reply)


class _ClientGone(Exception):
    """The interface server acknowledged a response message with ``closed``."""


class _AckTimeout(Exception):
    """No acknowledgement of a response message within ``ack_timeout``."""


class _ReplySender:
    """
    Sends response messages, retrying briefly on ``ChannelFull``, paced by the client.

    A response of one message is sent as is (held with the consumer's sends
    when there are any to hold it with). A longer one (streaming and
    file responses, content over ``AsgiHandler.chunk_size``) puts an
    ``ack_channel`` on every message but the last; the interface server
    answers ``{"ok": True}`` there once that message is written and the
    connection's unsent output is small, or ``{"closed": True}`` when the
    client is gone. At most ``window`` messages go unacknowledged, so a
    client reading slowly slows the view instead of filling the server's
    memory; the last message waits for every acknowledgement.

    Only for requests whose reader said it acknowledges (``response_acks``
    in the ``http.request`` message, as chanserve's interface server does);
    and waiting needs a worker thread: on the reactor thread (where blocking
    is impossible) pacing is dropped for the rest of the response.
    """

    window = 2
    ack_timeout = 300.0

    def __init__(self, layer, channel, clock=None, paced=True):
        self.layer = layer
        self.channel = channel
        self.clock = clock if clock is not None else layer.reactor
        self.started = False
        self._ack_channel = None
        self._unacked = 0
        self._paced = paced

    def send(self, content):
        """Send one response message (waiting for acknowledgements first if needed)."""
        more = content.get("more_content", False)
        if self._paced and (more or self._unacked):
            limit = self.window if more else 1
            while self._paced and self._unacked >= limit:
                self._wait()
            if more and self._paced:
                if self._ack_channel is None:
                    self._ack_channel = new_channel_name("http.response.ack?")
                content = dict(content, ack_channel=self._ack_channel)
                self._unacked += 1
        held = None if more else _held_sends.get()
        if held is not None:
            # The last message goes out with the consumer's held sends, in
            # the same hop to the reactor that tells the worker it finished.
            held.add(_RetryingSends(self.layer, self.clock), "send", self.channel, content)
        else:
            _on_reactor(self.layer, _send_retrying, self.layer, self.channel, content, self.clock)
        self.started = True

    def send_abort(self):
        """Cut the response short now (the client sees it incomplete), not waiting for acks."""
        self._paced = False
        self.send(dict(ABORT_RESPONSE))

    def _wait(self):
        """Take the oldest acknowledgement; raise ``_ClientGone`` or ``_AckTimeout``."""
        try:
            _, ack = _on_reactor(self.layer, _receive_within, self.layer, self._ack_channel,
                                 self.ack_timeout, self.clock)
        except _WouldBlock:
            self._paced = False
            return
        except RequestTimeout:
            raise _AckTimeout(f"no acknowledgement on {self._ack_channel!r} "
                              f"for {self.ack_timeout} seconds") from None
        self._unacked -= 1
        if ack.get("closed"):
            raise _ClientGone()


def view_consumer(message):
    """
    The default ``http.request`` consumer: Django's view layer.

    Runs in a worker thread. Response chunks go out as they are produced
    (not held until the consumer returns), except the last: in a worker it
    joins the consumer's held sends, so it travels to the reactor with the
    worker's "finished" instead of costing a wait of its own. Once
    ``disconnect_consumer`` saw the client leave, the response is abandoned
    and closed. It never raises:
    a failure before the response started is answered with a 500, a failure
    after it cuts the response short (the connection closes without ending
    the body, so the client can tell).
    """
    reply = message.reply_channel
    if reply is None:
        _log.warn("http.request message without a reply_channel on {channel}",
                  channel=message.channel.name)
        return
    handler = get_view_handler()
    sender = _ReplySender(message.channel_layer, reply.name, getattr(handler, "_clock", None),
                          paced=message.content.get("response_acks") is True)
    replies = handler(message)
    try:
        for content in replies:
            if reply.name in _gone:
                _log.info("Client of {path!r} went away; response abandoned",
                          path=message.content.get("path"))
                break
            sender.send(content)
    except _ClientGone:
        _log.info("Client of {path!r} went away; response abandoned",
                  path=message.content.get("path"))
    except _AckTimeout:
        _log.warn("Client of {path!r} read nothing for {timeout} s; response abandoned",
                  path=message.content.get("path"), timeout=sender.ack_timeout)
        try:
            sender.send_abort()
        except Exception:
            _log.failure("Could not end the response to {path!r}", path=message.content.get("path"))
    except Exception:
        send_failed = isinstance(sys.exc_info()[1], (ChannelFull, _WouldBlock))
        _log.failure("Error serving {path!r}", path=message.content.get("path"))
        if not send_failed:
            try:
                if sender.started:
                    sender.send_abort()
                else:
                    sender.send(_internal_error(sys.exc_info()))
            except Exception:
                _log.failure("Could not send the error response for {path!r}",
                             path=message.content.get("path"))
    finally:
        _gone.discard(reply.name)
        close = getattr(replies, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                _log.failure("Error closing the response to {path!r}",
                             path=message.content.get("path"))


def _internal_error(exc_info):
    """A plain-text 500 response message: the traceback in DEBUG."""
    message = dict(_INTERNAL_ERROR)
    if settings.DEBUG:
        message["content"] = "".join(traceback.format_exception(*exc_info)).encode("utf-8")
    return message
