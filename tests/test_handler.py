"""AsgiRequest, AsgiHandler, encode_response and view_consumer (chanserve.handler)."""

import asyncio
import contextvars
import gc
import json
import os
import threading

from django.core import signals
from django.http import HttpResponse, StreamingHttpResponse
from django.test.utils import override_settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from twisted.internet import defer, reactor, task, threads
from twisted.internet.threads import blockingCallFromThread
from twisted.trial import unittest

import chanserve.handler as handler_module
from chanserve.channel import Message, holding_sends
from chanserve.exceptions import ChannelFull, RequestAborted, RequestTimeout
from chanserve.handler import (
    AsgiHandler,
    AsgiRequest,
    _receive_within,
    _send_retrying,
    disconnect_consumer,
    view_consumer,
)
from chanserve.layers import InMemoryChannelLayer
from tests.project import django_views, ensure_database
from tests.test_django_compare import multipart

# -- a URLconf of this module's own views (ROOT_URLCONF = "tests.test_handler") --

PROBES = []
SEEN = []  # reply messages an AckingReader took


def probe_stream(request):
    """Streams 4 parts; before each, records how many reply messages were sent."""
    def parts():
        for i in range(4):
            PROBES.append(blockingCallFromThread(reactor, len, SEEN))
            yield b"part%d" % i

    return StreamingHttpResponse(parts())


STREAM_LOG = []


def endless(request):
    """Streams parts until closed; the client 'disconnects' after the second part."""
    layer = request.message.channel_layer
    reply = request.reply_channel.name

    def parts():
        try:
            for i in range(1000):
                if i == 2:
                    notice = Message({"reply_channel": reply, "path": "/endless/"},
                                     "http.disconnect", layer)
                    blockingCallFromThread(
                        reactor, lambda: defer.ensureDeferred(disconnect_consumer(notice)))
                STREAM_LOG.append(i)
                yield b"part%d" % i
        finally:
            STREAM_LOG.append("closed")

    return StreamingHttpResponse(parts())


@csrf_exempt
def read_post(request):
    return HttpResponse("got %d fields" % len(request.POST))


@csrf_exempt
def echo_length(request):
    return HttpResponse(str(len(request.body)))


urlpatterns = [
    path("probe/", probe_stream),
    path("endless/", endless),
    path("post/", read_post),
    path("length/", echo_length),
    path("later/", django_views.later),
    path("hello/", django_views.hello),
]


def http_message(layer, path="/hello/", method="GET", headers=(), body=b"", reply="r!1", **extra):
    """A ``Message`` on http.request with the given parts."""
    content = {
        "reply_channel": reply,
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [[b"host", b"testserver"], *[[k, v] for k, v in headers]],
        "body": body,
        "client": ["10.0.0.1", 4321],
        "server": ["testserver", 8080],
    }
    content.update(extra)
    return Message(content, "http.request", layer)


def drain(layer, prefix="r!"):
    """Every message queued on ``prefix`` (a synchronous in-memory layer)."""
    out = []
    while True:
        d = layer.receive([prefix])
        if not d.called:
            d.cancel()
            d.addErrback(lambda f: None)
            return out
        out.append(d.result[1])


class AckingReader:
    """
    Reads ``r!`` reply messages on the reactor like the interface server
    does and answers every ``ack_channel`` with ``answer(n)`` (``n`` counts
    acknowledged messages; None: no answer). Collected in ``SEEN``.
    """

    def __init__(self, case, layer, answer=lambda n: {"ok": True}):
        self.layer = layer
        self.answer = answer
        del SEEN[:]
        self._acked = 0
        self.done = defer.Deferred.fromCoroutine(self._run())
        case.addCleanup(self.done.cancel)
        self.done.addErrback(lambda f: f.trap(defer.CancelledError))

    async def _run(self):
        while True:
            _, message = await self.layer.receive(["r!"])
            SEEN.append(message)
            ack = message.get("ack_channel")
            if ack is not None:
                answer = self.answer(self._acked)
                self._acked += 1
                if answer is not None:
                    await self.layer.send(ack, answer)
            if not message.get("more_content"):
                return


class PacedLayer:
    """
    An in-memory layer (not running, reactor-thread use) that answers each
    ``ack_channel`` message at once with ``answer(n)`` (None: never) and
    records ``("sent", n)``, ``("sent", "last")`` and ``("wait",)`` events.
    """

    cross_process = False

    def __init__(self, answer=lambda n: {"ok": True}):
        self._layer = InMemoryChannelLayer(reactor=task.Clock())
        self.reactor = self._layer.reactor
        self.answer = answer
        self.events = []
        self._acked = 0

    def send(self, channel, message):
        if channel.startswith("r!"):
            if "ack_channel" in message:
                n = self._acked
                self._acked += 1
                self.events.append(("sent", n))
                answer = self.answer(n)
                if answer is not None:
                    self._layer.send(message["ack_channel"], answer)
            else:
                self.events.append(("sent", "last"))
        return self._layer.send(channel, message)

    def receive(self, channels):
        if channels[0].startswith("http.response.ack?"):
            self.events.append(("wait",))
        return self._layer.receive(channels)


def use_urls(case, **more):
    overrides = override_settings(ROOT_URLCONF="tests.test_handler", **more)
    overrides.enable()
    case.addCleanup(overrides.disable)


class AsgiRequestTests(unittest.SynchronousTestCase):
    """AsgiRequest builds Django's request attributes and META from the message."""

    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=task.Clock())

    def test_meta(self):
        """Method, path, query, content headers, HTTP_* headers, client and server go to META."""
        request = AsgiRequest(http_message(
            self.layer, path="/a/b/", method="post", query_string=b"x=1&y=%C3%A9",
            headers=[(b"content-type", b"text/plain; charset=utf-8"),
                     (b"content-length", b"3"), (b"x-custom-thing", b"v")],
            body=b"abc", http_version="1.0"))
        meta = request.META
        self.assertEqual(request.method, "POST")
        self.assertEqual(meta["REQUEST_METHOD"], "POST")
        self.assertEqual((request.path, request.path_info), ("/a/b/", "/a/b/"))
        self.assertEqual((meta["PATH_INFO"], meta["SCRIPT_NAME"]), ("/a/b/", ""))
        self.assertEqual(meta["QUERY_STRING"], "x=1&y=%C3%A9")
        self.assertEqual(request.GET.getlist("y"), ["é"])
        self.assertEqual(meta["CONTENT_TYPE"], "text/plain; charset=utf-8")
        self.assertEqual(request.encoding, "utf-8")
        self.assertEqual(meta["CONTENT_LENGTH"], "3")
        self.assertEqual(meta["HTTP_X_CUSTOM_THING"], "v")
        self.assertEqual(meta["HTTP_HOST"], "testserver")
        self.assertEqual((meta["REMOTE_ADDR"], meta["REMOTE_PORT"]), ("10.0.0.1", 4321))
        self.assertEqual((meta["SERVER_NAME"], meta["SERVER_PORT"]), ("testserver", "8080"))
        self.assertEqual(meta["SERVER_PROTOCOL"], "HTTP/1.0")
        self.assertEqual(request.body, b"abc")

    def test_duplicate_headers(self):
        """Repeated headers are joined with commas, repeated Cookie headers with '; '."""
        request = AsgiRequest(http_message(self.layer, headers=[
            (b"accept", b"a/b"), (b"accept", b"c/d"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]))
        self.assertEqual(request.META["HTTP_ACCEPT"], "a/b,c/d")
        self.assertEqual(request.COOKIES, {"a": "1", "b": "2"})

    def test_underscore_headers_dropped(self):
        """A header with an underscore is dropped, as WSGI servers do (no spoofing of X-Foo by X_Foo)."""
        request = AsgiRequest(http_message(self.layer, headers=[(b"x_forwarded_for", b"1.2.3.4")]))
        self.assertNotIn("HTTP_X_FORWARDED_FOR", request.META)

    def test_root_path(self):
        """root_path becomes SCRIPT_NAME and is taken off path_info."""
        request = AsgiRequest(http_message(self.layer, path="/app/x/", root_path="/app"))
        self.assertEqual((request.path, request.path_info, request.META["SCRIPT_NAME"]),
                         ("/app/x/", "/x/", "/app"))
        bare = AsgiRequest(http_message(self.layer, path="/x/", root_path="/app"))
        self.assertEqual((bare.path, bare.path_info), ("/app/x/", "/x/"))
        top = AsgiRequest(http_message(self.layer, path="/app", root_path="/app"))
        self.assertEqual(top.path_info, "/")

    def test_force_script_name(self):
        """FORCE_SCRIPT_NAME wins over root_path, as in Django's handlers."""
        with override_settings(FORCE_SCRIPT_NAME="/forced"):
            request = AsgiRequest(http_message(self.layer, path="/forced/p/"))
        self.assertEqual((request.script_name, request.path_info), ("/forced", "/p/"))

    def test_scheme(self):
        """The message's scheme decides is_secure(); SECURE_PROXY_SSL_HEADER still applies."""
        self.assertFalse(AsgiRequest(http_message(self.layer)).is_secure())
        self.assertTrue(AsgiRequest(http_message(self.layer, scheme="https")).is_secure())
        with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
            request = AsgiRequest(http_message(
                self.layer, headers=[(b"x-forwarded-proto", b"https")]))
            self.assertTrue(request.is_secure())

    def test_no_server(self):
        """Without server, SERVER_NAME/PORT are 'unknown'/'0' like Django's ASGI request."""
        request = AsgiRequest(http_message(self.layer, server=None, client=None))
        self.assertEqual((request.META["SERVER_NAME"], request.META["SERVER_PORT"]), ("unknown", "0"))
        self.assertNotIn("REMOTE_ADDR", request.META)

    def test_undecodable_query(self):
        """A query string that is not UTF-8 is kept (latin-1) instead of failing."""
        request = AsgiRequest(http_message(self.layer, query_string=b"q=\xff"))
        self.assertEqual(request.META["QUERY_STRING"], "q=\xff")

    def test_message_and_reply_channel(self):
        """request.message and request.reply_channel are there for views."""
        message = http_message(self.layer, reply="r!abc")
        request = AsgiRequest(message)
        self.assertIs(request.message, message)
        self.assertEqual(request.reply_channel.name, "r!abc")

    def test_plain_dict(self):
        """A plain dict message works too (no reply channel, no body channel)."""
        request = AsgiRequest(dict(http_message(self.layer, body=b"xyz").content))
        self.assertIsNone(request.reply_channel)
        self.assertEqual(request.read(), b"xyz")


class BodyStreamTests(unittest.SynchronousTestCase):
    """The body is read lazily from the body channel, chunk by chunk, as Django reads it."""

    def setUp(self):
        self.clock = task.Clock()
        self.layer = InMemoryChannelLayer(reactor=self.clock)

    def request_with_chunks(self, first, chunks, closed_at=None):
        for i, chunk in enumerate(chunks):
            self.layer.send("http.request.body?b", {
                "content": chunk, "more_content": i < len(chunks) - 1,
                "closed": i == closed_at})
        length = len(first) + sum(len(c) for c in chunks)
        return AsgiRequest(http_message(
            self.layer, method="POST", body=first, body_channel="http.request.body?b",
            headers=[(b"content-length", str(length).encode())]))

    def queued(self):
        return self.successResultOf(self.layer.statistics())["queue_depth"].get(
            "http.request.body?b", 0)

    def test_lazy_reads(self):
        """Chunks are taken off the body channel only when the reader needs them."""
        request = self.request_with_chunks(b"0123456789", [b"abcde", b"fghij", b"klmno"])
        self.assertEqual(self.queued(), 3)
        self.assertEqual(request.read(4), b"0123")
        self.assertEqual(self.queued(), 3)
        self.assertEqual(request.read(8), b"456789ab")
        self.assertEqual(self.queued(), 2)
        self.assertEqual(request.read(), b"cdefghijklmno")
        self.assertEqual(self.queued(), 0)
        self.assertEqual(request.read(), b"")

    def test_readline(self):
        """readline finds line ends across chunks."""
        request = self.request_with_chunks(b"one\ntw", [b"o\nthr", b"ee"])
        self.assertEqual(list(request), [b"one\n", b"two\n", b"three"])

    def test_body_property(self):
        """request.body joins the first body and every chunk."""
        request = self.request_with_chunks(b"ab", [b"cd", b"", b"ef"])
        self.assertEqual(request.body, b"abcdef")

    def test_closed_aborts(self):
        """A chunk with closed=True raises RequestAborted and is remembered."""
        request = self.request_with_chunks(b"ab", [b"cd", b""], closed_at=1)
        self.assertRaises(RequestAborted, request.read)
        self.assertIsInstance(request.body_failure, RequestAborted)
        self.assertNotIsInstance(request.body_failure, RequestTimeout)

    def test_missing_chunk_on_reactor_thread(self):
        """On the reactor thread a chunk that is not there yet cannot be waited for: abort."""
        request = self.request_with_chunks(b"ab", [])
        self.assertRaises(RequestAborted, request.read)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ReceiveWithinTests(unittest.SynchronousTestCase):
    """_receive_within: one body chunk, or RequestTimeout after the timeout."""

    def setUp(self):
        self.clock = task.Clock()
        self.layer = InMemoryChannelLayer(reactor=self.clock)

    def test_times_out(self):
        """No chunk within the timeout fails with RequestTimeout; the receive is cancelled."""
        d = _receive_within(self.layer, "http.request.body?t", 60, self.clock)
        self.assertNoResult(d)
        self.clock.advance(59)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.failureResultOf(d, RequestTimeout)
        # The cancelled receive took nothing: a later chunk stays for someone else.
        self.layer.send("http.request.body?t", {"content": b"x"})
        self.assertEqual(self.successResultOf(self.layer.receive(["http.request.body?t"]))[1],
                         {"content": b"x"})

    def test_arrives_in_time(self):
        """A chunk arriving before the timeout is returned and the timer is cancelled."""
        d = _receive_within(self.layer, "http.request.body?t", 60, self.clock)
        self.clock.advance(30)
        self.layer.send("http.request.body?t", {"content": b"x"})
        self.assertEqual(self.successResultOf(d)[1], {"content": b"x"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_already_there(self):
        """A chunk already queued is returned without scheduling anything."""
        self.layer.send("http.request.body?t", {"content": b"x"})
        d = _receive_within(self.layer, "http.request.body?t", 60, self.clock)
        self.assertEqual(self.successResultOf(d)[1], {"content": b"x"})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SendRetryingTests(unittest.SynchronousTestCase):
    """_send_retrying: a reply send waits out a full channel briefly, then gives up."""

    def setUp(self):
        self.clock = task.Clock()
        self.layer = InMemoryChannelLayer(reactor=self.clock, capacity=1)
        self.layer.send("r!1", {"n": 0})

    def test_retries_until_room(self):
        """On ChannelFull the send is retried after a delay and goes through once there is room."""
        d = _send_retrying(self.layer, "r!1", {"n": 1}, self.clock, delays=(0.1, 0.2))
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertNoResult(d)
        self.successResultOf(self.layer.receive(["r!"]))
        self.clock.advance(0.2)
        self.successResultOf(d)
        self.assertEqual(self.successResultOf(self.layer.receive(["r!"]))[1], {"n": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gives_up(self):
        """When the channel stays full past every delay, the send fails with ChannelFull."""
        d = _send_retrying(self.layer, "r!1", {"n": 1}, self.clock, delays=(0.1, 0.2))
        self.clock.pump([0.1, 0.2])
        self.failureResultOf(d, ChannelFull)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_immediate(self):
        """With room, the send completes at once with no timer."""
        self.successResultOf(self.layer.receive(["r!"]))
        self.successResultOf(_send_retrying(self.layer, "r!1", {"n": 1}, self.clock))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class EncodeResponseTests(unittest.SynchronousTestCase):
    """AsgiHandler.encode_response turns Django responses into http.response messages."""

    def test_small_response(self):
        """One message: status, headers (as bytes pairs), content, more_content False."""
        response = HttpResponse("hi", status=201, content_type="text/plain")
        response["X-Thing"] = "é"
        [message] = list(AsgiHandler.encode_response(response))
        self.assertEqual(message["status"], 201)
        self.assertIn([b"Content-Type", b"text/plain"], message["headers"])
        self.assertIn([b"X-Thing", "é".encode("latin-1")], message["headers"])
        self.assertEqual((message["content"], message["more_content"]), (b"hi", False))

    def test_every_cookie(self):
        """Each cookie is its own Set-Cookie header."""
        response = HttpResponse()
        response.set_cookie("a", "1")
        response.set_cookie("b", "2", httponly=True)
        [message] = list(AsgiHandler.encode_response(response))
        cookies = [v for k, v in message["headers"] if k == b"Set-Cookie"]
        self.assertEqual(cookies, [b"a=1; Path=/", b"b=2; HttpOnly; Path=/"])

    def test_chunked_content(self):
        """Content larger than chunk_size is split; only the last has more_content False."""
        body = bytes(range(256)) * 2000
        messages = list(AsgiHandler.encode_response(HttpResponse(body)))
        size = AsgiHandler.chunk_size
        self.assertEqual(len(messages), -(-len(body) // size))
        self.assertEqual(b"".join(m["content"] for m in messages), body)
        self.assertEqual([m["more_content"] for m in messages],
                         [True] * (len(messages) - 1) + [False])
        self.assertTrue(all(len(m["content"]) <= size for m in messages))
        self.assertEqual([("status" in m) for m in messages], [True] + [False] * (len(messages) - 1))

    def test_empty_response(self):
        """An empty body is one message with empty content."""
        [message] = list(AsgiHandler.encode_response(HttpResponse(status=204)))
        self.assertEqual((message["content"], message["more_content"]), (b"", False))

    def test_async_streaming_is_lazy(self):
        """Over an async iterator too: part by part (Django's own iteration gathers it all),
        on one event loop; closing early closes the iterator."""
        produced = []

        async def parts():
            loop = asyncio.get_running_loop()
            try:
                for i in range(3):
                    await asyncio.sleep(0)
                    produced.append((i, loop))
                    yield b"p%d" % i
            finally:
                produced.append("closed")

        messages = AsgiHandler.encode_response(StreamingHttpResponse(parts()))
        self.assertTrue(next(messages)["more_content"])
        self.assertEqual(next(messages), {"content": b"p0", "more_content": True})
        self.assertEqual(len(produced), 1)
        self.assertEqual(next(messages), {"content": b"p1", "more_content": True})
        self.assertIs(produced[0][1], produced[1][1])
        messages.close()
        self.assertEqual(produced[2:], ["closed"])
        messages = AsgiHandler.encode_response(StreamingHttpResponse(parts()))
        self.assertEqual([m["content"] for m in messages], [b"", b"p0", b"p1", b"p2", b""])

    def test_async_streaming_one_context(self):
        """Context variables set in an async stream last across its parts (one task's worth)."""
        var = contextvars.ContextVar("var", default="unset")

        async def parts():
            token = var.set("set")
            try:
                for _ in range(3):
                    await asyncio.sleep(0)
                    yield var.get().encode()
            finally:
                var.reset(token)

        messages = list(AsgiHandler.encode_response(StreamingHttpResponse(parts())))
        self.assertEqual([m["content"] for m in messages], [b"", b"set", b"set", b"set", b""])
        self.assertEqual(var.get(), "unset")

    def test_async_streaming_sync_calls_thread_per_response(self):
        """``sync_to_async`` in async streams: one thread per response (not asgiref's single
        process-wide one), whose database connection is closed when the response ends."""
        from asgiref.sync import sync_to_async
        from django.db import connections
        ensure_database()
        seen = {}

        def where(name):
            connection = connections["default"]
            connection.ensure_connection()
            seen.setdefault(name, []).append((threading.get_ident(), connection))

        def response(name):
            async def parts():
                for _ in range(2):
                    await sync_to_async(where)(name)
                    yield b"x"
            return AsgiHandler.encode_response(StreamingHttpResponse(parts()))

        first, second = response("a"), response("b")
        for _ in range(3):
            next(first)
            next(second)
        list(first)
        list(second)
        threads_a = {ident for ident, _ in seen["a"]}
        threads_b = {ident for ident, _ in seen["b"]}
        self.assertEqual((len(threads_a), len(threads_b)), (1, 1))
        self.assertNotEqual(threads_a, threads_b)
        self.assertNotIn(threading.get_ident(), threads_a | threads_b)
        for _, connection in seen["a"] + seen["b"]:
            self.assertIsNone(connection.connection)

    def test_async_streaming_close_error_logged(self):
        """An async stream failing as it is closed early: logged, and its thread still ends."""
        started = threading.active_count()

        async def parts():
            try:
                yield b"a"
                yield b"b"
            finally:
                raise KeyError("closing")

        messages = AsgiHandler.encode_response(StreamingHttpResponse(parts()))
        next(messages)
        next(messages)
        messages.close()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertLessEqual(threading.active_count(), started)

    def test_streaming_is_lazy(self):
        """A streaming response is read part by part as messages are taken, never joined."""
        produced = []

        def parts():
            for i in range(3):
                produced.append(i)
                yield b"p%d" % i

        messages = AsgiHandler.encode_response(StreamingHttpResponse(parts()))
        first = next(messages)
        self.assertEqual((first["status"], first["content"], first["more_content"]), (200, b"", True))
        self.assertEqual(produced, [])
        self.assertEqual(next(messages), {"content": b"p0", "more_content": True})
        self.assertEqual(produced, [0])
        rest = list(messages)
        self.assertEqual(rest, [{"content": b"p1", "more_content": True},
                                {"content": b"p2", "more_content": True},
                                {"content": b"", "more_content": False}])

    def test_big_streaming_part_split(self):
        """A streaming part larger than chunk_size is split into several messages."""
        big = b"x" * (AsgiHandler.chunk_size * 2 + 1)
        messages = list(AsgiHandler.encode_response(StreamingHttpResponse([big])))
        self.assertEqual([len(m["content"]) for m in messages[1:-1]],
                         [AsgiHandler.chunk_size, AsgiHandler.chunk_size, 1])


class AsgiHandlerTests(unittest.SynchronousTestCase):
    """AsgiHandler runs Django's request cycle for a message (here on the reactor thread)."""

    def setUp(self):
        ensure_database()
        use_urls(self)
        self.layer = InMemoryChannelLayer(reactor=task.Clock())
        self.handler = AsgiHandler()

    def test_response_and_signals(self):
        """A view's response comes out as messages; request_started/finished fire once each."""
        seen = []

        def started(sender, **kwargs):
            seen.append(("started", kwargs.get("message")))

        def finished(sender, **kwargs):
            seen.append(("finished", sender))

        signals.request_started.connect(started)
        signals.request_finished.connect(finished)
        self.addCleanup(signals.request_started.disconnect, started)
        self.addCleanup(signals.request_finished.disconnect, finished)
        message = http_message(self.layer)
        [reply] = list(self.handler(message))
        self.assertEqual((reply["status"], reply["content"]), (200, b"hello from django"))
        self.assertEqual(seen, [("started", message), ("finished", AsgiHandler)])

    def test_response_later(self):
        """A view raising ResponseLater produces no messages; its reply channel is kept."""
        django_views.LATER.clear()
        self.assertEqual(list(self.handler(http_message(self.layer, path="/later/", reply="r!l"))), [])
        self.assertEqual(django_views.LATER, ["r!l"])

    def test_head_has_no_body(self):
        """HEAD responses keep their headers and lose their body."""
        [reply] = list(self.handler(http_message(self.layer, method="HEAD")))
        self.assertEqual(reply["content"], b"")
        self.assertIn([b"Content-Length", b"17"], reply["headers"])

    def test_client_gone_mid_body(self):
        """A client that goes away while the view reads the body gets no response at all."""
        self.layer.send("http.request.body?g", {"content": b"a=", "more_content": True, "closed": False})
        self.layer.send("http.request.body?g", {"content": b"", "more_content": False, "closed": True})
        message = http_message(
            self.layer, path="/post/", method="POST", body=b"x=1&",
            headers=[(b"content-type", b"application/x-www-form-urlencoded"),
                     (b"content-length", b"20")],
            body_channel="http.request.body?g")
        with override_settings(MIDDLEWARE=[]):
            self.assertEqual(list(AsgiHandler()(message)), [])

    def test_aborted_upload_leaves_no_file(self):
        """An upload the client cut short: its temporary file goes with the request, not at
        some later garbage collection (Django closes only the files it completed)."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        body, content_type = multipart({}, {"f": ("big.bin", b"x" * 300000)})
        for content, closed in ((body[1000:100000], False), (body[100000:200000], False),
                                (b"", True)):
            self.layer.send("http.request.body?u", {"content": content, "more_content": True,
                                                    "closed": closed})
        message = http_message(
            self.layer, path="/post/", method="POST", body=body[:1000],
            body_channel="http.request.body?u",
            headers=[(b"content-type", content_type.encode()),
                     (b"content-length", str(len(body)).encode())])
        gc.disable()
        self.addCleanup(gc.enable)
        with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=10, FILE_UPLOAD_TEMP_DIR=directory):
            self.assertEqual(list(self.handler(message)), [])
        self.assertEqual(os.listdir(directory), [])

    def test_client_gone_csrf(self):
        """A client gone while CsrfViewMiddleware reads POST data: no response either."""
        self.layer.send("http.request.body?g", {"content": b"", "more_content": False, "closed": True})
        message = http_message(
            self.layer, path="/post/", method="POST", body=b"x=1&",
            headers=[(b"content-type", b"application/x-www-form-urlencoded"),
                     (b"content-length", b"20")],
            body_channel="http.request.body?g")
        self.assertEqual(list(self.handler(message)), [])

    def test_full_body(self):
        """A body over several chunks reaches the view whole."""
        for i in range(3):
            self.layer.send("http.request.body?f", {"content": b"x" * 1000, "more_content": i < 2})
        message = http_message(self.layer, path="/length/", method="POST", body=b"y" * 10,
                               headers=[(b"content-length", b"3010")],
                               body_channel="http.request.body?f")
        [reply] = list(self.handler(message))
        self.assertEqual(reply["content"], b"3010")


class ThreadedHandlerTests(unittest.TestCase):
    """view_consumer and AsgiHandler in a worker thread, waiting on the layer."""

    def setUp(self):
        ensure_database()
        use_urls(self)
        self.layer = InMemoryChannelLayer(reactor=reactor)

    @defer.inlineCallbacks
    def test_body_timeout_is_408(self):
        """A body that stops arriving for body_receive_timeout seconds answers 408."""
        clock = task.Clock()
        waiting = defer.Deferred()
        receive = self.layer.receive

        def watched_receive(channels):
            d = receive(channels)
            if channels == ["http.request.body?s"] and not waiting.called:
                # Once this call returned (and its timer is scheduled).
                reactor.callLater(0, waiting.callback, None)
            return d

        self.layer.receive = watched_receive
        message = http_message(
            self.layer, path="/length/", method="POST", body=b"abc",
            headers=[(b"content-length", b"100")], body_channel="http.request.body?s")
        with override_settings(MIDDLEWARE=[]):
            handler = AsgiHandler(clock=clock)
            running = threads.deferToThread(lambda: list(handler(message)))
            yield waiting
            clock.advance(AsgiRequest.body_receive_timeout)
            replies = yield running
        self.assertEqual([r["status"] for r in replies], [408])

    @defer.inlineCallbacks
    def test_body_read_while_arriving(self):
        """The view reads chunks as they are sent, from a worker thread."""
        message = http_message(
            self.layer, path="/length/", method="POST", body=b"",
            headers=[(b"content-length", b"6")], body_channel="http.request.body?w")
        running = threads.deferToThread(view_consumer, message)
        for i, part in enumerate([b"ab", b"cd", b"ef"]):
            yield self.layer.send("http.request.body?w", {"content": part, "more_content": i < 2})
        yield running
        _, reply = yield self.layer.receive(["r!"])
        self.assertEqual(reply["content"], b"6")

    @defer.inlineCallbacks
    def test_chunks_sent_as_produced(self):
        """view_consumer sends each streamed part before the next one is produced."""
        del PROBES[:]
        reader = AckingReader(self, self.layer)
        yield threads.deferToThread(
            view_consumer, http_message(self.layer, path="/probe/", response_acks=True))
        yield reader.done
        # Before part i, the headers message and parts 0..i-1 were already sent.
        self.assertEqual(PROBES, [1, 2, 3, 4])
        self.assertEqual([reply["content"] for reply in SEEN],
                         [b"", b"part0", b"part1", b"part2", b"part3", b""])
        # Every message but the last asked for an acknowledgement, on one channel.
        acks = [reply.get("ack_channel") for reply in SEEN]
        self.assertIsNone(acks[-1])
        self.assertEqual(len(set(acks[:-1])), 1)
        self.assertTrue(acks[0].startswith("http.response.ack?"))

    @defer.inlineCallbacks
    def test_ack_timeout_abandons_response(self):
        """No acknowledgement within ack_timeout ends the response with a warning and closes it."""
        del STREAM_LOG[:]
        clock = task.Clock()
        waiting = defer.Deferred()
        receive = self.layer.receive

        def watched_receive(channels):
            d = receive(channels)
            if channels[0].startswith("http.response.ack?") and not waiting.called:
                reactor.callLater(0, waiting.callback, None)
            return d

        self.layer.receive = watched_receive
        reader = AckingReader(self, self.layer, answer=lambda n: None)
        previous = handler_module._handler
        self.addCleanup(setattr, handler_module, "_handler", previous)
        with override_settings(MIDDLEWARE=[]):
            handler_module.set_view_handler(AsgiHandler(clock=clock))
        running = threads.deferToThread(
            view_consumer, http_message(self.layer, path="/endless/", response_acks=True))
        yield waiting
        clock.advance(handler_module._ReplySender.ack_timeout)
        yield running
        yield reader.done
        # Headers and part 0 (the window of two), then the response cut short; part 1
        # was produced (the sender waited before sending it) and the response closed.
        self.assertEqual([reply.get("content") for reply in SEEN], [b"", b"part0", None])
        self.assertEqual(SEEN[-1], {"more_content": False, "abort": True})
        self.assertEqual(STREAM_LOG, [0, 1, "closed"])
        self.assertEqual(len(self.flushLoggedErrors()), 0)


    @defer.inlineCallbacks
    def test_client_gone_stops_streaming(self):
        """After http.disconnect for its reply channel, a streaming response stops and is closed."""
        del STREAM_LOG[:]
        AckingReader(self, self.layer)
        yield threads.deferToThread(
            view_consumer, http_message(self.layer, path="/endless/", response_acks=True))
        self.assertEqual(STREAM_LOG, [0, 1, 2, "closed"])
        # The headers and the parts made before the disconnect; nothing after it.
        self.assertEqual([reply["content"] for reply in SEEN], [b"", b"part0", b"part1"])
        self.assertNotIn("r!1", handler_module._gone)


class ViewConsumerTests(unittest.SynchronousTestCase):
    """view_consumer's error handling and the seed's encode_response example."""

    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=task.Clock())
        previous = handler_module._handler
        self.addCleanup(setattr, handler_module, "_handler", previous)

    def test_error_before_response_is_500(self):
        """A handler failing before any message is answered with a 500."""
        def failing(message):
            raise RuntimeError("no")
            yield

        handler_module.set_view_handler(failing)
        view_consumer(http_message(self.layer))
        [reply] = drain(self.layer)
        self.assertEqual((reply["status"], reply["more_content"]), (500, False))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_error_mid_stream_cuts_response(self):
        """A failure after the response started cuts it short instead of sending a second status."""
        def failing(message):
            yield {"status": 200, "headers": [], "content": b"a", "more_content": True}
            raise RuntimeError("half way")

        handler_module.set_view_handler(failing)
        view_consumer(http_message(self.layer))
        replies = drain(self.layer)
        self.assertEqual(replies, [{"status": 200, "headers": [], "content": b"a", "more_content": True},
                                   {"more_content": False, "abort": True}])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_last_message_goes_with_held_sends(self):
        """
        In a consumer (sends held), every message but the last goes out at
        once; the last is held and goes out, in order, when the worker
        flushes (with its "finished"), saving a wait on the reactor.
        """
        def streaming(message):
            yield {"status": 200, "headers": [], "content": b"a", "more_content": True}
            yield {"content": b"b", "more_content": True}
            yield {"content": b"c", "more_content": False}

        handler_module.set_view_handler(streaming)
        with holding_sends() as held:
            view_consumer(http_message(self.layer))
        self.assertEqual([r["content"] for r in drain(self.layer)], [b"a", b"b"])
        self.assertEqual(len(held), 1)
        self.assertEqual(self.successResultOf(held.flush()), [])
        self.assertEqual(drain(self.layer), [{"content": b"c", "more_content": False}])

    def test_held_last_message_retries_when_full(self):
        """The held last message retries on ChannelFull instead of being dropped."""
        layer = InMemoryChannelLayer(reactor=task.Clock(), channel_capacity={"r!*": 1})
        handler_module.set_view_handler(lambda message: iter(
            [{"status": 200, "headers": [], "content": b"ok", "more_content": False}]))
        self.successResultOf(layer.send("r!1", {"content": b"earlier"}))
        with holding_sends() as held:
            view_consumer(http_message(layer))
        flushed = held.flush()
        self.assertNoResult(flushed)
        self.assertEqual(drain(layer), [{"content": b"earlier"}])
        layer.reactor.advance(0.005)
        self.assertEqual(self.successResultOf(flushed), [])
        self.assertEqual(drain(layer), [{"status": 200, "headers": [], "content": b"ok",
                                         "more_content": False}])

    def test_no_reply_channel(self):
        """A message without a reply channel is dropped without raising."""
        message = http_message(self.layer)
        del message.content["reply_channel"]
        view_consumer(Message(message.content, "http.request", self.layer))
        self.assertEqual(drain(self.layer), [])

    def test_default_handler(self):
        """By default view_consumer serves Django's URLs."""
        handler_module.set_view_handler(None)
        use_urls(self)
        view_consumer(http_message(self.layer))
        [reply] = drain(self.layer)
        self.assertEqual(reply["content"], b"hello from django")

    def test_seed_http_consumer(self):
        """The seed's first consumer works verbatim: encode_response + reply_channel.send."""
        def http_consumer(message):
            response = HttpResponse("Hello world! You asked for %s" % message.content["path"])
            for chunk in AsgiHandler.encode_response(response):
                message.reply_channel.send(chunk)

        with holding_sends() as held:
            http_consumer(http_message(self.layer, path="/seed/"))
        self.assertEqual(drain(self.layer), [])
        self.assertEqual(self.successResultOf(held.flush()), [])
        [reply] = drain(self.layer)
        self.assertEqual(reply["content"], b"Hello world! You asked for /seed/")


class JsonTests(unittest.SynchronousTestCase):
    """Reply messages are plain layer content (bytes, ints, lists): they survive the layer."""

    def test_content_types(self):
        """Every value in an encoded response is str/bytes/int/bool/list."""
        response = HttpResponse(json.dumps({"a": 1}), content_type="application/json")
        response.set_cookie("c", "v")
        for message in AsgiHandler.encode_response(response):
            for key, value in message.items():
                self.assertIsInstance(key, str)
                self.assertIsInstance(value, (bytes, int, bool, list))


class ReplyPacingTests(unittest.SynchronousTestCase):
    """view_consumer keeps at most a window of response messages unacknowledged."""

    def setUp(self):
        previous = handler_module._handler
        self.addCleanup(setattr, handler_module, "_handler", previous)
        self.closed = []

    def use_parts(self, count):
        """A view handler streaming ``count`` parts after the headers (closing is recorded)."""
        def replies(message):
            try:
                yield {"status": 200, "headers": [], "content": b"", "more_content": True}
                for i in range(count):
                    yield {"content": b"part%d" % i, "more_content": True}
                yield {"content": b"", "more_content": False}
            finally:
                self.closed.append(True)

        handler_module.set_view_handler(replies)

    def test_window(self):
        """Message k+2 is sent only after the acknowledgement of message k; the last waits for all."""
        layer = PacedLayer()
        self.use_parts(4)
        view_consumer(http_message(layer, response_acks=True))
        self.assertEqual(layer.events, [
            ("sent", 0), ("sent", 1), ("wait",), ("sent", 2), ("wait",), ("sent", 3),
            ("wait",), ("sent", 4), ("wait",), ("wait",), ("sent", "last")])
        replies = drain(layer._layer)
        self.assertEqual([r["content"] for r in replies],
                         [b"", b"part0", b"part1", b"part2", b"part3", b""])
        self.assertEqual(self.closed, [True])

    def test_closed_ack_stops(self):
        """A ``closed`` acknowledgement stops the response (no more messages) and closes it."""
        layer = PacedLayer(answer=lambda n: {"closed": True} if n == 1 else {"ok": True})
        self.use_parts(10)
        view_consumer(http_message(layer, response_acks=True))
        self.assertEqual(layer.events, [
            ("sent", 0), ("sent", 1), ("wait",), ("sent", 2), ("wait",)])
        self.assertEqual(len(drain(layer._layer)), 3)
        self.assertEqual(self.closed, [True])

    def test_single_message_not_paced(self):
        """A one-message response has no ack_channel and waits for nothing."""
        layer = PacedLayer()
        handler_module.set_view_handler(
            lambda message: iter([{"status": 200, "headers": [], "content": b"hi",
                                   "more_content": False}]))
        view_consumer(http_message(layer, response_acks=True))
        self.assertEqual(layer.events, [("sent", "last")])
        [reply] = drain(layer._layer)
        self.assertNotIn("ack_channel", reply)

    def test_big_content_paced(self):
        """A plain response longer than chunk_size is sent in acknowledged chunks."""
        layer = PacedLayer()
        handler_module.set_view_handler(
            lambda message: AsgiHandler.encode_response(
                HttpResponse(b"x" * (AsgiHandler.chunk_size * 2 + 1))))
        view_consumer(http_message(layer, response_acks=True))
        self.assertEqual(layer.events, [("sent", 0), ("sent", 1), ("wait",), ("wait",),
                                        ("sent", "last")])
        replies = drain(layer._layer)
        self.assertEqual(b"".join(r["content"] for r in replies),
                         b"x" * (AsgiHandler.chunk_size * 2 + 1))

    def test_no_waiting_on_reactor_thread(self):
        """Where it cannot block (reactor thread), a response goes out unpaced."""
        layer = PacedLayer(answer=lambda n: None)
        self.use_parts(4)
        view_consumer(http_message(layer, response_acks=True))
        self.assertEqual(layer.events, [("sent", 0), ("sent", 1), ("wait",), ("sent", "last"),
                                        ("sent", "last"), ("sent", "last"), ("sent", "last")])
        self.assertEqual(len(drain(layer._layer)), 6)

    def test_unpaced_without_response_acks(self):
        """A request whose reader does not acknowledge (no response_acks) is never paced."""
        layer = PacedLayer()
        self.use_parts(4)
        view_consumer(http_message(layer))
        self.assertEqual(layer.events, [("sent", "last")] * 6)
        self.assertFalse(any("ack_channel" in r for r in drain(layer._layer)))
