"""HTTP in the interface server, in memory: messages, responses, streaming, limits, timeouts."""

import io

from twisted.trial.unittest import SynchronousTestCase

from chanserve.server._parsing import HTTPError, parse_head
from chanserve.server._proxy import ProxyHeaders

from .support import Harness

GET = b"GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"hi",
      "more_content": False}


class HTTPTestCase(SynchronousTestCase):
    """Shared set-up: a harness, torn down at the end."""

    options = {}
    layer_options = None

    def setUp(self):
        self.h = Harness(layer_options=self.layer_options, **self.options)
        self.addCleanup(self.h.stop)

    def request(self, data=GET, peer=("10.0.0.7", 50000)):
        protocol, transport = self.h.connect(peer)
        protocol.dataReceived(data)
        return protocol, transport

    def assertServed(self):
        """A fresh, well-behaved client still gets its answer."""
        _, transport = self.request()
        message = self.h.next("http.request")
        self.assertEqual(message["path"], "/hello")
        self.h.reply(message, OK)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nhi"))


class RequestMessageTests(HTTPTestCase):
    """What an HTTP request becomes on the ``http.request`` channel."""

    options = {"root_path": "/mount"}

    def test_every_contract_key(self):
        """A request carries every contract key, with headers lowercased, ordered, duplicates kept."""
        self.request(b"GET /a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\n"
                     b"X-Thing: one\r\nAccept: */*\r\nx-thing: two\r\n\r\n")
        message = self.h.next("http.request")
        self.assertEqual(message["reply_channel"].split("!")[0] + "!", self.h.server.prefix)
        self.assertEqual(message["http_version"], "1.1")
        self.assertEqual(message["method"], "GET")
        self.assertEqual(message["scheme"], "http")
        self.assertEqual(message["path"], "/a b/\u00e9")
        self.assertEqual(message["root_path"], "/mount")
        self.assertEqual(message["query_string"], b"x=1&y=%20")
        self.assertEqual(message["headers"], [
            [b"host", b"example.com"], [b"x-thing", b"one"], [b"accept", b"*/*"],
            [b"x-thing", b"two"]])
        self.assertEqual(message["body"], b"")
        self.assertNotIn("body_channel", message)
        self.assertEqual(message["client"], ["10.0.0.7", 50000])
        self.assertEqual(message["server"], ["127.0.0.1", 8000])

    def test_underscore_headers_dropped(self):
        """Header names containing ``_`` are dropped (they could smuggle as ``-`` in WSGI-style META)."""
        self.request(b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nX-Ok: 1\r\n\r\n")
        self.assertEqual(self.h.next("http.request")["headers"], [[b"host", b"a"], [b"x-ok", b"1"]])

    def test_small_body(self):
        """A body within one chunk travels in ``body``, with no ``body_channel``."""
        protocol, _ = self.request(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
        self.assertIsNone(self.h.next("http.request"))  # it waits for the whole body
        protocol.dataReceived(b"lo")
        message = self.h.next("http.request")
        self.assertEqual(message["body"], b"hello")
        self.assertNotIn("body_channel", message)

    def test_chunked_body(self):
        """A chunked request body is decoded (extensions and trailers ignored)."""
        self.request(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
        self.assertEqual(self.h.next("http.request")["body"], b"hello0123456789")

    def test_http10(self):
        """An HTTP/1.0 request without Host is accepted and says ``http_version`` 1.0."""
        self.request(b"GET /old HTTP/1.0\r\n\r\n")
        self.assertEqual(self.h.next("http.request")["http_version"], "1.0")

    def test_absolute_form(self):
        """An absolute-form target gives its path and query."""
        self.request(b"GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        message = self.h.next("http.request")
        self.assertEqual((message["path"], message["query_string"]), ("/abs", b"q=1"))


    def test_absolute_form_authority(self):
        """
        The authority of an absolute-form target ends at "?" too, and it
        replaces Host (RFC 9112 3.2.2); userinfo is dropped.
        """
        self.request(b"GET http://u:p@example.com?x=/admin/ HTTP/1.1\r\nHost: other\r\n\r\n")
        message = self.h.next("http.request")
        self.assertEqual((message["path"], message["query_string"]), ("/", b"x=/admin/"))
        self.assertEqual([v for k, v in message["headers"] if k == b"host"], [b"example.com"])

    def test_fragment_dropped(self):
        """A fragment (which clients must not send) is not passed on in path or query."""
        self.request(b"GET /p?a=1#frag HTTP/1.1\r\nHost: a\r\n\r\n")
        message = self.h.next("http.request")
        self.assertEqual((message["path"], message["query_string"]), ("/p", b"a=1"))

    def test_leading_empty_lines(self):
        """A few empty lines before a request are ignored (RFC 9112 2.2)."""
        self.request(b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.h.next("http.request")["path"], "/x")


class ResponseTests(HTTPTestCase):
    """Reply messages become HTTP responses."""

    def test_content_length_and_keep_alive(self):
        """A complete response gets Content-Length, and the connection serves the next request."""
        protocol, transport = self.request()
        self.h.reply(self.h.next("http.request"), OK)
        value = transport.value()
        self.assertIn(b"\r\nContent-Length: 2\r\n", value)
        self.assertIn(b"\r\ncontent-type: text/plain\r\n", value)
        self.assertIn(b"\r\nDate: ", value)
        self.assertNotIn(b"Connection: close", value)
        transport.clear()
        protocol.dataReceived(GET)
        self.h.reply(self.h.next("http.request"), OK)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(transport.connected)

    def test_streaming_chunked(self):
        """Without Content-Length, ``more_content`` chunks go out with chunked encoding."""
        _, transport = self.request()
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "headers": [], "content": b"abc", "more_content": True})
        self.h.reply(message, {"content": b"defgh", "more_content": True})
        self.h.reply(message, {"content": b"", "more_content": False})
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(body, b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n")

    def test_streaming_with_length(self):
        """With the application's Content-Length, chunks are written as they are."""
        _, transport = self.request()
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "headers": [[b"Content-Length", b"4"]],
                               "content": b"ab", "more_content": True})
        self.h.reply(message, {"content": b"cd"})
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertNotIn(b"chunked", head)
        self.assertEqual(body, b"abcd")

    def test_abort_cuts_chunked_response(self):
        """``abort`` after the start: what was sent stays, no last chunk, connection closed."""
        _, transport = self.request()
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "headers": [], "content": b"abc", "more_content": True})
        self.h.reply(message, {"more_content": False, "abort": True})
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertEqual(body, b"3\r\nabc\r\n")
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_second_status_cuts_response(self):
        """A ``status`` after the response started (a late 500) cuts it, not appended as body."""
        _, transport = self.request()
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "headers": [], "content": b"abc", "more_content": True})
        self.h.reply(message, {"status": 500, "headers": [], "content": b"Internal Server Error"})
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertEqual(body, b"3\r\nabc\r\n")
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_abort_close_delimited_resets(self):
        """Cutting a response whose end is the connection's end (HTTP/1.0): a reset, not a
        FIN; a chunked one ends with a FIN (the missing last chunk tells)."""
        for request, reset in ((b"GET / HTTP/1.0\r\n\r\n", True), (GET, False)):
            _, transport = self.request(request)
            aborts = []
            abort = transport.abortConnection
            transport.abortConnection = lambda: (aborts.append(1), abort())
            message = self.h.next("http.request")
            self.h.reply(message, {"status": 200, "headers": [], "content": b"abc",
                                   "more_content": True})
            self.h.reply(message, {"more_content": False, "abort": True})
            self.assertEqual(bool(aborts), reset, request)
            self.assertFalse(transport.connected)

    def test_abort_before_start_is_500(self):
        """``abort`` before any status: a 500, connection closed."""
        _, transport = self.request()
        self.h.reply(self.h.next("http.request"), {"abort": True})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "))
        self.assertFalse(transport.connected)

    def test_short_of_content_length_closes(self):
        """A response ending short of its Content-Length closes the connection (no desync)."""
        protocol, transport = self.request()
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "headers": [[b"Content-Length", b"10"]],
                               "content": b"abc", "more_content": True})
        self.h.reply(message, {"content": b"", "more_content": False})
        self.assertTrue(transport.value().endswith(b"\r\n\r\nabc"))
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_over_content_length_cut(self):
        """Content past the Content-Length is not sent; the connection serves the next request."""
        protocol, transport = self.request()
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "headers": [[b"Content-Length", b"4"]],
                               "content": b"abc", "more_content": True})
        self.h.reply(message, {"content": b"defHTTP/1.1 200 OK\r\n", "more_content": False})
        self.assertTrue(transport.value().endswith(b"\r\n\r\nabcd"))
        self.assertTrue(transport.connected)
        transport.clear()
        protocol.dataReceived(GET)
        self.h.reply(self.h.next("http.request"), OK)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))
        self.flushLoggedErrors()

    def test_bad_content_length_is_500(self):
        """A Content-Length that is not a number (or two that differ): 500, not a broken frame."""
        for headers in ([[b"Content-Length", b"abc"]], [[b"Content-Length", b"-1"]],
                        [[b"Content-Length", b"2"], [b"Content-Length", b"3"]]):
            _, transport = self.request()
            self.h.reply(self.h.next("http.request"),
                         {"status": 200, "headers": headers, "content": b"hi"})
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "), headers)
        self.flushLoggedErrors()

    def test_head_content_length_kept(self):
        """A HEAD response keeps its Content-Length without a body, and the connection stays."""
        _, transport = self.request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.reply(self.h.next("http.request"), {"status": 200, "headers": [[b"Content-Length", b"10"]]})
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 10", head)
        self.assertEqual(body, b"")
        self.assertTrue(transport.connected)

    def test_http10_streaming_closes(self):
        """An HTTP/1.0 streamed response without length ends by closing the connection."""
        _, transport = self.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        message = self.h.next("http.request")
        self.h.reply(message, {"status": 200, "content": b"ab", "more_content": True})
        self.h.reply(message, {"content": b"cd", "more_content": False})
        self.assertTrue(transport.value().endswith(b"Connection: close\r\n\r\nabcd"))
        self.assertFalse(transport.connected)

    def test_http10_keep_alive(self):
        """An HTTP/1.0 client asking for keep-alive gets it when the length is known."""
        _, transport = self.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.h.reply(self.h.next("http.request"), OK)
        self.assertIn(b"Connection: keep-alive\r\n", transport.value())
        self.assertTrue(transport.connected)

    def test_head(self):
        """A response to HEAD carries headers only."""
        _, transport = self.request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.reply(self.h.next("http.request"), OK)
        self.assertTrue(transport.value().endswith(b"\r\n\r\n"))
        self.assertIn(b"Content-Length: 2", transport.value())

    def test_no_body_status(self):
        """A 204 gets neither a body nor a Content-Length."""
        _, transport = self.request()
        self.h.reply(self.h.next("http.request"), {"status": 204, "content": b"x"})
        self.assertNotIn(b"Content-Length", transport.value())
        self.assertTrue(transport.value().endswith(b"\r\n\r\n"))

    def test_pipelining(self):
        """Pipelined requests are answered in order, one dispatched at a time."""
        protocol, transport = self.request(GET + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        first = self.h.next("http.request")
        self.assertIsNone(self.h.next("http.request"))
        self.h.reply(first, dict(OK, content=b"one"))
        second = self.h.next("http.request")
        self.assertEqual(second["path"], "/second")
        self.h.reply(second, dict(OK, content=b"two"))
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertTrue(transport.value().endswith(b"two"))

    def test_crlf_after_body_is_not_a_request(self):
        """
        The CRLF some clients send after a POST body is not the start of a
        request: the keep-alive connection idles, no 408 later.
        """
        protocol, transport = self.request(
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab\r\n")
        self.h.reply(self.h.next("http.request"), OK)
        self.h.reactor.advance(12)  # past the header timeout, before the idle one
        self.assertNotIn(b"408", transport.value())
        self.assertTrue(transport.connected)

    def test_pipelined_flood_paused(self):
        """Pipelined input beyond the buffer bound pauses reading until it is worked off."""
        n = self.h.server.max_buffer // len(GET) + 1
        protocol, transport = self.request(GET * (n + 1))
        self.assertEqual(transport.producerState, "paused")
        self.h.reply(self.h.next("http.request"), OK)
        self.assertEqual(transport.producerState, "producing")
        self.assertIsNotNone(self.h.next("http.request"))

    def test_connection_close(self):
        """``Connection: close`` from the client closes after the response."""
        _, transport = self.request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.h.reply(self.h.next("http.request"), OK)
        self.assertIn(b"Connection: close", transport.value())
        self.assertFalse(transport.connected)

    def test_str_headers(self):
        """Response header names and values may be str (latin-1) as well as bytes."""
        _, transport = self.request()
        self.h.reply(self.h.next("http.request"),
                     {"status": 201, "headers": [["X-Name", "caf\u00e9"]], "content": b""})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 201 Created\r\n"))
        self.assertIn(b"\r\nX-Name: caf\xe9\r\n", transport.value())

    def test_header_injection_refused(self):
        """A response header with CR/LF is refused with a 500, not written."""
        _, transport = self.request()
        self.h.reply(self.h.next("http.request"),
                     {"status": 200, "headers": [[b"x-evil", b"a\r\nSet-Cookie: x=1"]]})
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "))
        self.assertNotIn(b"Set-Cookie", transport.value())
        self.assertServed()

    def test_reply_for_gone_request_dropped(self):
        """A reply to a request whose client left is counted, dropped and logged."""
        from twisted.logger import LogLevel, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol, transport = self.request()
        message = self.h.next("http.request")
        transport.loseConnection()
        self.h.reply(message, OK)
        self.assertEqual(self.h.server.statistics["replies_dropped"], 1)
        warned = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([e["log_format"][:20] for e in warned], ["Reply on {channel!r}"])

    def test_disconnect_message(self):
        """A client leaving before its response makes an ``http.disconnect`` message."""
        protocol, transport = self.request(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        message = self.h.next("http.request")
        transport.loseConnection()
        self.assertEqual(self.h.next("http.disconnect"),
                         {"reply_channel": message["reply_channel"], "path": "/slow"})

    def test_no_disconnect_after_response(self):
        """No ``http.disconnect`` once the response is complete."""
        protocol, transport = self.request()
        self.h.reply(self.h.next("http.request"), OK)
        transport.loseConnection()
        self.assertIsNone(self.h.next("http.disconnect"))


class RepliesUnreceivableTests(HTTPTestCase):
    """While the layer says this server's replies can't arrive, requests get 503 at once."""

    def test_http_503_at_once(self):
        """No ``http.request`` is sent (no worker runs a view for nothing); 503 now."""
        down = self.patch(self.h.server, "_receivable",
                          lambda channel: not channel.startswith(self.h.server.prefix))
        _, transport = self.request()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "), transport.value())
        self.assertIn(b"channel layer unavailable", transport.value())
        self.assertIsNone(self.h.next("http.request"))
        self.assertEqual(self.h.server.statistics["http_layer_unavailable"], 1)
        down.restore()
        self.assertServed()


class HalfCloseTests(HTTPTestCase):
    """A client that closes its sending side (a FIN: browsers and proxies leaving)."""

    options = {"body_chunk_size": 4}

    def test_before_response_is_gone(self):
        """Before its response starts, the client is taken as gone: ``http.disconnect`` at once."""
        protocol, transport = self.request()
        request = self.h.next("http.request")
        protocol.readConnectionLost()
        self.assertFalse(transport.connected)
        self.assertEqual(self.h.next("http.disconnect")["reply_channel"], request["reply_channel"])

    def test_streamed_response_finished(self):
        """
        A response already under way is written to the end, then the
        connection closes (nothing left over can make a request).
        """
        protocol, transport = self.request(GET + b"GET /next HT")
        request = self.h.next("http.request")
        self.h.reply(request, {"status": 200, "headers": [], "content": b"a", "more_content": True})
        protocol.readConnectionLost()
        self.assertTrue(transport.connected)
        self.h.reply(request, {"content": b"b", "more_content": False})
        self.assertTrue(transport.value().endswith(b"1\r\nb\r\n0\r\n\r\n"), transport.value())
        self.assertFalse(transport.connected)
        self.assertIsNone(self.h.next("http.disconnect"))
        self.assertIsNone(self.h.next("http.request"))

    def test_incomplete_body_closes(self):
        """A body that can no longer arrive: closed, and the consumer hears of it."""
        protocol, transport = self.request(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabcdef")
        request = self.h.next("http.request")
        self.assertEqual(request["body"], b"abcd")
        protocol.readConnectionLost()
        self.assertFalse(transport.connected)
        self.assertEqual(self.h.next(request["body_channel"]),
                         {"content": b"", "more_content": False, "closed": True})
        self.assertEqual(self.h.next("http.disconnect")["reply_channel"], request["reply_channel"])

    def test_idle_closes(self):
        """Half-closed with nothing asked (or half a head): closed at once."""
        for data in (b"", b"GET / HT"):
            protocol, transport = self.request(data)
            protocol.readConnectionLost()
            self.assertFalse(transport.connected)
            self.assertIsNone(self.h.next("http.request"))


class BodyStreamingTests(HTTPTestCase):
    """Large bodies travel as ``http.request.body`` chunks, with backpressure."""

    options = {"body_chunk_size": 4}
    layer_options = {"channel_capacity": {"http.request.body*": 2}}

    def test_chunks(self):
        """A body over one chunk: first chunk in ``body``, the rest on ``body_channel`` in order."""
        self.request(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
        message = self.h.next("http.request")
        self.assertEqual(message["body"], b"0123456789"[:len(message["body"])])
        channel = message["body_channel"]
        self.assertTrue(channel.startswith("http.request.body?"))
        chunks = []
        while True:
            chunk = self.h.next(channel)
            chunks.append(chunk)
            if not chunk["more_content"]:
                break
        self.assertEqual(message["body"] + b"".join(c["content"] for c in chunks), b"0123456789")
        self.assertEqual({c["closed"] for c in chunks}, {False})

    def test_streams_before_upload_ends(self):
        """``http.request`` goes as soon as the first chunk is in, while the client still uploads."""
        protocol, _ = self.request(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabcd")
        message = self.h.next("http.request")
        self.assertEqual(message["body"], b"abcd")
        protocol.dataReceived(b"efgh")
        self.assertEqual(self.h.next(message["body_channel"])["content"], b"efgh")

    def test_backpressure(self):
        """A full body channel pauses the socket; reading the channel lets the upload go on."""
        protocol, transport = self.request(
            b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n\r\n" + b"x" * 16)
        message = self.h.next("http.request")
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"y" * 8)
        received = [message["body"]]
        for _ in range(10):
            self.h.reactor.advance(1)
            chunk = self.h.next(message["body_channel"])
            while chunk is not None:
                received.append(chunk["content"])
                if not chunk["more_content"]:
                    break
                chunk = self.h.next(message["body_channel"])
            if chunk is not None and not chunk["more_content"]:
                break
        self.assertEqual(b"".join(received), b"x" * 16 + b"y" * 8)
        self.assertEqual(transport.producerState, "producing")

    def test_client_leaves_mid_body(self):
        """A client gone mid-upload: the body channel gets ``closed`` and ``http.disconnect`` is sent."""
        protocol, transport = self.request(
            b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 4)
        message = self.h.next("http.request")
        transport.loseConnection()
        self.assertEqual(self.h.next(message["body_channel"]),
                         {"content": b"", "more_content": False, "closed": True})
        self.assertEqual(self.h.next("http.disconnect")["reply_channel"], message["reply_channel"])


class MalformedRequestTests(HTTPTestCase):
    """Malformed input gets a 4xx/5xx and a closed connection; everyone else is still served."""

    def assertRefused(self, data, status):
        _, transport = self.request(data)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 %d " % status), transport.value())
        self.assertFalse(transport.connected)
        self.assertIsNone(self.h.next("http.request"))
        self.assertServed()

    def test_bad_request_line(self):
        """A request line with the wrong number of parts: 400."""
        self.assertRefused(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400)

    def test_bad_method(self):
        """A method that is not a token: 400."""
        self.assertRefused(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400)

    def test_space_before_colon(self):
        """Whitespace between a header name and its colon: 400 (RFC 9112 5.1)."""
        self.assertRefused(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400)

    def test_obs_fold(self):
        """Obsolete line folding: 400."""
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400)

    def test_bare_lf_in_value(self):
        """A bare LF inside the head: 400."""
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\nX-B: c\r\n\r\n", 400)

    def test_bare_lf_lines(self):
        """A head whose lines end in bare LF is refused at once, not left waiting."""
        self.assertRefused(b"GET / HTTP/1.1\nHost: a\n\n", 400)

    def test_control_character(self):
        """A NUL in a header value: 400."""
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400)

    def test_missing_host(self):
        """HTTP/1.1 without Host: 400."""
        self.assertRefused(b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400)

    def test_two_hosts(self):
        """Two Host fields: 400."""
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)

    def test_content_length_and_chunked(self):
        """Content-Length together with Transfer-Encoding (request smuggling): 400."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n", 400)

    def test_conflicting_lengths(self):
        """Two different Content-Lengths: 400."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                           b"Content-Length: 4\r\n\r\nabcd", 400)

    def test_duplicate_equal_lengths(self):
        """Two equal Content-Lengths: 400 too (as gunicorn, uvicorn and Daphne), never a "3,3"."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                           b"Content-Length: 3\r\n\r\nabc", 400)

    def test_empty_line_flood(self):
        """Endless empty lines before a request: 400, not a reactor busy stripping them."""
        self.assertRefused(b"\r\n" * 9 + GET, 400)

    def test_bare_lf_chunk_size(self):
        """A chunk size line ending in a bare LF: 400 at once, not a wait for the body timeout."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\nabc", 400)

    def test_malformed_trailer(self):
        """A trailer field without a colon: 400 and a closed connection."""
        _, transport = self.request(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_ambiguous_authority(self):
        """Two "@" in an absolute-form authority (which host is meant?): 400."""
        self.assertRefused(b"GET http://u@evil.example@good.example/hello/ HTTP/1.1\r\n"
                           b"Host: good.example\r\n\r\n", 400)

    def test_signed_length(self):
        """A Content-Length with a sign: 400."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400)

    def test_unknown_transfer_coding(self):
        """A transfer coding other than chunked: 501."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501)

    def test_bad_chunk_size(self):
        """A chunk size that is not hex: 400."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nhello\r\n0\r\n\r\n", 400)

    def test_chunk_without_crlf(self):
        """Chunk data longer than announced: 400."""
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nhello\r\n0\r\n\r\n", 400)

    def test_http2_version(self):
        """An HTTP version we don't speak: 505."""
        self.assertRefused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)

    def test_binary_garbage(self):
        """Random binary bytes: 400."""
        self.assertRefused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400)


class LimitTests(HTTPTestCase):
    """Size limits and timeouts; after each trips, a well-behaved client is still served."""

    options = {"max_header_size": 1024, "max_headers": 10, "max_request_body": 100,
               "http_timeout": 5.0, "header_timeout": 3.0, "idle_timeout": 7.0,
               "body_timeout": 4.0}
    layer_options = {"channel_capacity": {"http.request": 1}}

    def test_header_block_too_large(self):
        """A head over ``max_header_size``: 431, even before its end arrives."""
        _, transport = self.request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_too_many_headers(self):
        """More than ``max_headers`` fields: 431."""
        many = b"".join(b"X-%d: v\r\n" % i for i in range(11))
        _, transport = self.request(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertServed()

    def test_request_line_too_long(self):
        """A request line over ``max_header_size``: 414 (URI Too Long), not 431."""
        _, transport = self.request(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "), transport.value())
        self.assertServed()

    def test_trailer_section_limits(self):
        """Trailers count against ``max_headers``/``max_header_size`` like the head: 431."""
        many = b"".join(b"X-%d: v\r\n" % i for i in range(11))
        _, transport = self.request(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n" + many + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "), transport.value())
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_body_too_large(self):
        """A Content-Length over ``max_request_body``: 413 before reading the body."""
        _, transport = self.request(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertIsNone(self.h.next("http.request"))
        self.assertServed()

    def test_chunked_body_too_large(self):
        """A chunked body growing over ``max_request_body``: 413."""
        _, transport = self.request(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"40\r\n" + b"a" * 64 + b"\r\n40\r\n" + b"b" * 64 + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertServed()

    def test_expect_continue(self):
        """``Expect: 100-continue`` within the limit gets a 100 Continue."""
        _, transport = self.request(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")

    def test_slow_head(self):
        """A head still incomplete after ``header_timeout`` (slowloris): 408 and closed."""
        protocol, transport = self.request(b"GET / HTTP/1.1\r\n")
        self.h.reactor.advance(2)
        protocol.dataReceived(b"Host: a\r\n")
        self.h.reactor.advance(1.5)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_idle_keep_alive(self):
        """A keep-alive connection idle for ``idle_timeout`` is closed silently."""
        protocol, transport = self.request()
        self.h.reply(self.h.next("http.request"), OK)
        self.h.reactor.advance(6.9)
        self.assertTrue(transport.connected)
        self.h.reactor.advance(0.2)
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_body_stall(self):
        """A body that stops arriving for ``body_timeout``: 408 and closed."""
        _, transport = self.request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        self.h.reactor.advance(4.1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertFalse(transport.connected)
        self.assertServed()

    def test_response_timeout(self):
        """No response within ``http_timeout``: 503; the late response is dropped."""
        _, transport = self.request()
        message = self.h.next("http.request")
        self.h.reactor.advance(5.1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertFalse(transport.connected)
        self.h.reply(message, OK)
        self.assertNotIn(b"200 OK", transport.value())
        self.assertServed()

    def test_channel_full(self):
        """``ChannelFull`` on ``http.request``: 503 at once."""
        self.request()
        _, transport = self.request()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertEqual(self.h.server.statistics["http_channel_full"], 1)
        self.h.next("http.request")
        self.assertServed()


class ShutdownTests(SynchronousTestCase):
    """``stopService``: in-flight responses finish, idle connections close."""

    def test_graceful(self):
        """Idle connections close at once; the stop waits for an in-flight response."""
        h = Harness()
        _, idle = h.connect()
        _, busy = h.connect()
        busy.protocol.dataReceived(GET)
        message = h.next("http.request")
        d = h.server.stopService()
        self.assertFalse(idle.connected)
        self.assertNoResult(d)
        h.reply(message, OK)
        self.assertIn(b"Connection: close", busy.value())
        self.assertFalse(busy.connected)
        self.successResultOf(d)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_pending_warning_summary_logged(self):
        """503s left out of the log (channel full) are summarised by the stop, no timer left."""
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = Harness(layer_options={"channel_capacity": {"http.request": 1}})
        for _ in range(4):
            _, transport = h.connect()
            transport.protocol.dataReceived(GET)
        warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 1, warned)
        h.reply(h.next("http.request"), OK)
        self.successResultOf(h.server.stopService())
        warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 2, warned)
        self.assertIn("(and 1 more like it", warned[1])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_deadline(self):
        """Connections still busy at ``shutdown_timeout`` are aborted."""
        h = Harness(shutdown_timeout=3)
        _, busy = h.connect()
        busy.protocol.dataReceived(GET)
        d = h.server.stopService()
        h.reactor.advance(3)
        self.assertFalse(busy.connected)
        self.successResultOf(d)


class AccessLogTests(HTTPTestCase):
    """One access log line per request."""

    def setUp(self):
        self.log = io.StringIO()
        self.options = {"access_log": self.log}
        super().setUp()

    def test_line(self):
        """Client, method, path with query, status, size and duration appear."""
        self.request(b"GET /p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.reactor.advance(0.25)
        self.h.reply(self.h.next("http.request"), OK)
        line = self.log.getvalue()
        self.assertRegex(line, r'^10\.0\.0\.7:50000 - - \[\d\d/\w+/\d{4}:[\d:]+ \+0000\] '
                               r'"GET /p\?q=1" 200 2 0\.250\n$')

    def test_refused(self):
        """A refused request is logged with its status."""
        self.request(b"BAD\r\n\r\n")
        self.assertIn('"- -" 400', self.log.getvalue())

    def test_forged_line(self):
        """
        A path whose percent-decoding holds a newline, a CR, an ESC, quotes
        or a backslash is escaped: one request is always one line.
        """
        self.request(b"GET /x%0a10.0.0.1:1%20-%20-%20%22GET%20/admin/%22%20200%0d%1b[31m%5c"
                     b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.reply(self.h.next("http.request"), OK)
        lines = self.log.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /x\\x0a10.0.0.1:1 - - \\"GET /admin/\\" 200\\x0d\\x1b[31m\\\\" 200 ',
                      lines[0])


class ProxyHeaderTests(SynchronousTestCase):
    """X-Forwarded-* are believed only from trusted proxies, right-most untrusted hop first."""

    def setUp(self):
        self.proxy = ProxyHeaders(["127.0.0.1", "10.0.0.0/8"])

    def test_untrusted_peer(self):
        """From an untrusted peer the headers are ignored."""
        headers = [[b"x-forwarded-for", b"1.1.1.1"], [b"x-forwarded-proto", b"https"]]
        self.assertEqual(self.proxy.resolve(["8.8.8.8", 5], "http", headers),
                         (["8.8.8.8", 5], "http"))

    def test_right_most_untrusted(self):
        """A forged left-most entry is skipped: the right-most untrusted hop is the client."""
        headers = [[b"x-forwarded-for", b"6.6.6.6, 2.2.2.2, 10.1.1.1"],
                   [b"x-forwarded-proto", b"https"], [b"x-forwarded-port", b"4433"]]
        self.assertEqual(self.proxy.resolve(["127.0.0.1", 5], "http", headers),
                         (["2.2.2.2", 4433], "https"))

    def test_unix_peer_trusted(self):
        """A unix socket's peer (``None``) is a local process: its headers are believed."""
        headers = [[b"x-forwarded-for", b"2.2.2.2"], [b"x-forwarded-proto", b"https"]]
        self.assertEqual(self.proxy.resolve(None, "http", headers), (["2.2.2.2", 0], "https"))
        self.assertEqual(self.proxy.resolve(None, "http", []), (None, "http"))

    def test_garbage(self):
        """A non-address entry stops the walk at the last good hop."""
        headers = [[b"x-forwarded-for", b"2.2.2.2, nonsense, 10.1.1.1"]]
        self.assertEqual(self.proxy.resolve(["127.0.0.1", 5], "http", headers)[0][0], "10.1.1.1")

    def test_through_server(self):
        """With ``proxy_headers`` the request's ``client`` and ``scheme`` come from the headers."""
        h = Harness(proxy_headers=True, trusted_proxies=["10.0.0.0/8"])
        self.addCleanup(h.stop)
        protocol, _ = h.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 3.3.3.3\r\n"
                              b"X-Forwarded-Proto: https\r\n\r\n")
        message = h.next("http.request")
        self.assertEqual((message["client"], message["scheme"]), (["3.3.3.3", 0], "https"))


class ParseHeadTests(SynchronousTestCase):
    """The request head parser on its own."""

    def test_keep_alive_rules(self):
        """1.1 is persistent unless ``close``; 1.0 only with ``keep-alive``."""
        self.assertTrue(parse_head(b"GET / HTTP/1.1\r\nHost: a").keep_alive)
        self.assertFalse(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close").keep_alive)
        self.assertFalse(parse_head(b"GET / HTTP/1.0").keep_alive)
        self.assertTrue(parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive)

    def test_upgrade(self):
        """A WebSocket upgrade needs both ``Upgrade: websocket`` and ``Connection: upgrade``."""
        self.assertTrue(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n"
                                   b"Connection: keep-alive, Upgrade").upgrade)
        self.assertFalse(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket").upgrade)

    def test_error_status(self):
        """Errors carry the status to answer."""
        e = self.assertRaises(HTTPError, parse_head, b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x")
        self.assertEqual(e.status, 501)

    def test_whitespace_trimmed(self):
        """Optional whitespace around a header value is not part of it."""
        head = parse_head(b"GET / HTTP/1.1\r\nHost:  a \t")
        self.assertEqual(head.headers, [[b"host", b"a"]])


class _AckLaterLayer:
    """Delivers sends at once but acknowledges them only when told (like a remote layer)."""

    def __init__(self, layer):
        self._layer = layer
        self.acks = []

    def send(self, channel, message):
        from twisted.internet import defer
        d = defer.Deferred()
        self._layer.send(channel, message).addBoth(lambda result: self.acks.append((d, result)))
        return d

    def ack_all(self):
        acks, self.acks = self.acks, []
        for d, result in acks:
            d.callback(result)

    def __getattr__(self, name):
        return getattr(self._layer, name)


class AsyncLayerTests(HTTPTestCase):
    """A layer whose sends are acknowledged later (Redis) works the same."""

    options = {"http_timeout": 5.0}

    def setUp(self):
        super().setUp()
        self.layer = self.h.server.layer = _AckLaterLayer(self.h.layer)

    def test_response_before_ack(self):
        """A response arriving before the send is acknowledged: no 503 later, next request served."""
        protocol, transport = self.request(GET + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.reply(self.h.next("http.request"), OK)
        self.assertIsNone(self.h.next("http.request"))  # the next waits for the ack
        self.layer.ack_all()
        self.h.reactor.advance(6)
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)
        second = self.h.next("http.request")
        self.assertEqual(second["path"], "/second")
        self.layer.ack_all()
        self.h.reply(second, OK)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
