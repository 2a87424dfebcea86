"""
One HTTP/1.x connection: requests become ``http.request`` messages, replies become bytes.

Requests on a connection are handled one at a time (pipelined requests wait
in the buffer, which is bounded by pausing the socket). A WebSocket upgrade
hands the connection to L{chanserve.server._websocket.WebSocketProtocol}.
"""

from twisted.internet import protocol
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from ..exceptions import ChannelFull, LayerUnavailable
from ._flow import ACK_CLOSED, OutputGate
from ._parsing import (
    HTTPError,
    check_field_line,
    parse_chunk_size,
    parse_head,
    response_header,
    status_line,
)

# Parser states.
_HEAD = 0
_BODY_LENGTH = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_END = 4
_TRAILERS = 5
_RESPONDING = 6  # request fully read; waiting for / writing the response
_UPGRADED = 7
_CLOSED = 8

_NO_BODY_STATUS = frozenset([204, 304])
_FRAMING = frozenset([b"content-length", b"transfer-encoding", b"connection", b"date", b"server"])
_MAX_CHUNK_LINE = 4096
# Empty lines tolerated before a request (RFC 9112 2.2 asks for at least one).
_MAX_EMPTY_LINES = 8


class _Deadline:
    """
    A timeout that is cheap to set, move and clear on every request.

    It keeps one ``DelayedCall``; moving the deadline later or clearing it
    only changes two attributes, and a call that fires before the current
    deadline re-arms itself for the remainder.
    """

    __slots__ = ("_clock", "_call", "_when", "_callback")

    def __init__(self, clock):
        self._clock = clock
        self._call = None
        self._when = 0.0
        self._callback = None

    def set(self, seconds, callback):
        """Call ``callback`` in ``seconds`` (0: never) instead of whatever was set."""
        if not seconds:
            self._callback = None
            return
        when = self._clock.seconds() + seconds
        self._when = when
        self._callback = callback
        call = self._call
        if call is None:
            self._call = self._clock.callLater(seconds, self._fire)
        elif call.getTime() > when:
            call.reset(seconds)

    def extend(self, seconds):
        """Move a pending deadline to ``seconds`` from now."""
        if self._callback is not None:
            self._when = self._clock.seconds() + seconds

    def clear(self):
        """Forget the pending deadline (its call stays scheduled, harmlessly)."""
        self._callback = None

    def cancel(self):
        """Forget the deadline and cancel the scheduled call."""
        self._callback = None
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _fire(self):
        self._call = None
        callback = self._callback
        if callback is None:
            return
        now = self._clock.seconds()
        if now < self._when:
            self._call = self._clock.callLater(self._when - now, self._fire)
            return
        self._callback = None
        callback()


def _address(address):
    """``[host, port]`` for an IP address, else None."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return None
    return [host, port]


@implementer(IHalfCloseableProtocol)
class HTTPProtocol(protocol.Protocol):
    """
    Speak HTTP/1.0 and 1.1 to one client on behalf of L{InterfaceServer}.

    @ivar server: the L{chanserve.server._service.InterfaceServer} (settings,
        layer, reactor, connection table, access log).
    """

    _log = Logger()

    def __init__(self, server):
        self.server = server
        self._buf = bytearray()
        self._state = _HEAD
        self._processing = False
        self._paused = False
        self._blocked = False       # a layer send is in flight or being retried
        self._timer = _Deadline(server.reactor)           # idle / header / body
        self._response_timer = _Deadline(server.reactor)  # http_timeout
        self._websocket = None
        self._output = None         # an OutputGate once a reply asked for an ack
        self._requests = 0
        self._read_closed = False   # the client shut down its sending side
        self._reset_request()

    def _reset_request(self):
        self._head = None
        self._message = None
        self._reply_channel = None
        self._body_channel = None
        self._body_remaining = 0
        self._body_parts = []
        self._body_buffered = 0
        self._body_total = 0
        self._body_done = False
        self._dispatched = False
        self._response_started = False
        self._response_done = False
        self._chunked_response = False
        self._write_body = True
        self._keep_alive = False
        self._status = None
        self._bytes_sent = 0
        self._length_left = None    # body bytes the response's Content-Length still promises
        self._started = 0.0
        self._retry = None
        self._retry_delay = 0.0
        self._pending_body = None
        self._empty_lines = 0
        self._trailer_bytes = 0
        self._trailer_fields = 0

    # -- connection ----------------------------------------------------------

    def connectionMade(self):
        transport = self.transport
        self.client = _address(transport.getPeer())
        self.server_address = _address(transport.getHost())
        self.secure = ISSLTransport.providedBy(transport)
        self._timer.set(self.server.idle_timeout, self._idle_timed_out)
        self.server.connection_made(self)

    def dataReceived(self, data):
        if self._state == _UPGRADED:
            self._websocket.dataReceived(data)
            return
        if self._state == _CLOSED:
            return
        starting = self._state == _HEAD and not self._buf
        self._buf += data
        if _BODY_LENGTH <= self._state <= _TRAILERS:
            self._timer.extend(self.server.body_timeout)
        self._process()
        if starting and self._state == _HEAD and self._buf:
            # A request head began and is incomplete: it must be done by the deadline.
            self._timer.set(self.server.header_timeout, self._header_timed_out)

    def readConnectionLost(self):
        """
        The client closed its sending side (a FIN).

        Browsers and proxies do that only when they leave, so before its
        response starts the client is taken as gone (``http.disconnect``),
        as Daphne does: long-polling consumers learn it at once. A
        response already under way is finished, then the connection closes.
        (A client that half-closes and still waits, like ``nc -N``, gets
        its answer only if it started before the FIN.)
        """
        self._read_closed = True
        if self._state == _UPGRADED:
            self.transport.loseConnection()
        elif not self._processing:
            self._end_if_input_exhausted()

    def _end_if_input_exhausted(self):
        """After a half-close: close, unless a response is being written (then after it)."""
        state = self._state
        if state in (_CLOSED, _UPGRADED) or (state == _RESPONDING and self._response_started):
            return  # _finish_response comes back here
        self._cancel_timers()
        self.transport.loseConnection()

    def writeConnectionLost(self):
        """We never half-close our side."""

    def connectionLost(self, reason=None):
        if self._state == _UPGRADED:
            self._websocket.connectionLost(reason)
            self.server.connection_lost(self)
            return
        previous = self._state
        self._state = _CLOSED
        self._cancel_timers()
        if self._output is not None:
            self._output.close()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._dispatched and not self._response_done:
            server = self.server
            if self._body_channel is not None and not self._body_done:
                server.send_quietly(self._body_channel,
                                    {"content": b"", "more_content": False, "closed": True})
            server.send_quietly("http.disconnect",
                                {"reply_channel": self._reply_channel, "path": self._message["path"]})
            if previous != _HEAD:
                self._access_log(self._status or 499)
        if self._reply_channel is not None:
            self.server.unregister(self._reply_channel)
        self.server.connection_lost(self)

    # -- timers --------------------------------------------------------------

    def _cancel_timers(self):
        self._timer.cancel()
        self._response_timer.cancel()

    def _idle_timed_out(self):
        self._log.debug("Closing idle connection from {client}", client=self.client)
        self._state = _CLOSED
        self.transport.loseConnection()

    def _header_timed_out(self):
        self._log.info("Request head from {client} too slow; closing", client=self.client)
        self._fail(408, "request head not received in time")

    def _body_timed_out(self):
        self._log.info("Request body from {client} stalled; closing", client=self.client)
        if self._dispatched:
            self._state = _CLOSED
            self.transport.abortConnection()
        else:
            self._fail(408, "request body not received in time")

    def _response_timed_out(self):
        if self._response_started or self._message is None:
            return
        self._log.warn("No response to {method} {path!r} within {timeout}s; answering 503",
                       method=self._message["method"], path=self._message["path"],
                       timeout=self.server.http_timeout)
        self._fail(503, "response timeout", body=b"Service Unavailable: no response in time")

    # -- flow control --------------------------------------------------------

    def _pause(self):
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _resume(self):
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def pause_for_shutdown(self):
        """The server is stopping: close now if idle, else close after the current response."""
        if self._state == _UPGRADED:
            self._websocket.shutdown()
        elif self._state == _HEAD and self._head is None and not self._buf:
            self._state = _CLOSED
            self.transport.loseConnection()
        else:
            self._keep_alive = False

    # -- parsing -------------------------------------------------------------

    def _take_body(self, buf):
        """Take the next piece of body from ``buf``: at most what remains and what fits a chunk."""
        take = min(self._body_remaining, len(buf),
                   self.server.body_chunk_size - self._body_buffered)
        data = bytes(buf[:take])
        del buf[:take]
        self._body_remaining -= take
        return data

    def _process(self):
        if self._processing:
            return
        self._processing = True
        try:
            while not self._blocked:
                state = self._state
                buf = self._buf
                if state == _HEAD:
                    if not buf:
                        return
                    if not self._head_step():
                        return
                elif state == _BODY_LENGTH:
                    if not buf:
                        return
                    data = self._take_body(buf)
                    self._body_data(data, self._body_remaining == 0)
                elif state == _CHUNK_SIZE:
                    end = buf.find(b"\r\n")
                    if end < 0:
                        if len(buf) > _MAX_CHUNK_LINE:
                            raise HTTPError(400, "chunk size line too long")
                        if b"\n" in buf:
                            raise HTTPError(400, "bare LF in a chunk size line")
                        return
                    size = parse_chunk_size(bytes(buf[:end]))
                    del buf[:end + 2]
                    if size:
                        self._body_remaining = size
                        self._state = _CHUNK_DATA
                    else:
                        self._state = _TRAILERS
                elif state == _CHUNK_DATA:
                    if not buf:
                        return
                    data = self._take_body(buf)
                    if not self._body_remaining:
                        self._state = _CHUNK_END
                    self._body_data(data, False)
                elif state == _CHUNK_END:
                    if len(buf) < 2:
                        return
                    if buf[:2] != b"\r\n":
                        raise HTTPError(400, "chunk data not followed by CRLF")
                    del buf[:2]
                    self._state = _CHUNK_SIZE
                elif state == _TRAILERS:
                    end = buf.find(b"\r\n")
                    if end < 0:
                        if len(buf) > self.server.max_header_size:
                            raise HTTPError(431, "trailer section too large")
                        if b"\n" in buf:
                            raise HTTPError(400, "bare LF in the trailer section")
                        return
                    if end:
                        # Trailer fields are read and dropped, within the head's limits.
                        check_field_line(bytes(buf[:end]))
                        self._trailer_bytes += end + 2
                        self._trailer_fields += 1
                        if (self._trailer_bytes > self.server.max_header_size
                                or self._trailer_fields > self.server.max_headers):
                            raise HTTPError(431, "trailer section too large")
                    del buf[:end + 2]
                    if end == 0:
                        self._body_data(b"", True)
                else:
                    return
        except HTTPError as e:
            self._fail(e.status, e.reason)
        finally:
            self._processing = False
            if self._read_closed:
                self._end_if_input_exhausted()
            else:
                self._flow()

    def _head_step(self):
        """Parse a complete head from the buffer; False when more bytes are needed."""
        buf = self._buf
        if buf[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request
            while buf[:2] == b"\r\n":
                del buf[:2]
                self._empty_lines += 1
                if self._empty_lines > _MAX_EMPTY_LINES:
                    raise HTTPError(400, "too many empty lines before a request")
        end = buf.find(b"\r\n\r\n")
        limit = self.server.max_header_size
        if end < 0:
            if len(buf) > limit:
                if buf.find(b"\r\n", 0, limit) < 0:
                    raise HTTPError(414, "request line too long")
                raise HTTPError(431, "request head too large")
            if buf.find(b"\n\n") >= 0:
                raise HTTPError(400, "bare LF line endings")
            return False
        if end > limit:
            if buf.find(b"\r\n", 0, limit) < 0:
                raise HTTPError(414, "request line too long")
            raise HTTPError(431, "request head too large")
        raw = bytes(buf[:end])
        del buf[:end + 4]
        head = parse_head(raw)
        if len(head.headers) > self.server.max_headers:
            raise HTTPError(431, "too many header fields")
        self._start_request(head, raw)
        return True

    def _start_request(self, head, raw):
        server = self.server
        self._timer.clear()
        self._head = head
        self._requests += 1
        self._started = server.reactor.seconds()
        self._keep_alive = head.keep_alive and not server.stopping

        client, scheme = self.client, ("https" if self.secure else "http")
        if server.proxy is not None:
            client, scheme = server.proxy.resolve(client, scheme, head.headers)

        if head.upgrade and head.method == "GET":
            if server.stopping:
                raise HTTPError(503, "shutting down")
            self._upgrade(head, raw, client, scheme)
            return

        if head.content_length is not None and head.content_length > server.max_request_body > 0:
            raise HTTPError(413, "request body larger than --max-request-body")

        self._reply_channel = server.new_reply_channel()
        self._message = {
            "reply_channel": self._reply_channel,
            "http_version": head.http_version,
            "method": head.method,
            "scheme": scheme,
            "path": head.path(),
            "root_path": server.root_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "body": b"",
            "client": client,
            "server": self.server_address,
            "response_acks": True,  # replies may ask for acknowledgements (ack_channel)
        }
        if head.chunked:
            self._state = _CHUNK_SIZE
        elif head.content_length:
            self._state = _BODY_LENGTH
            self._body_remaining = head.content_length
        else:
            self._state = _RESPONDING
            self._body_done = True
            self._dispatch(b"", False)
            return
        if head.expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._timer.set(server.body_timeout, self._body_timed_out)

    def _upgrade(self, head, raw, client, scheme):
        from ._websocket import WebSocketProtocol
        self._cancel_timers()
        if self._output is not None:
            self._output.close()  # the WebSocket watches the transport itself
            self._output = None
        self._state = _UPGRADED
        ws = self._websocket = WebSocketProtocol(
            self.server, head, client, self.server_address,
            "wss" if scheme == "https" else "ws")
        ws.makeConnection(self.transport)
        data = raw + b"\r\n\r\n" + bytes(self._buf)
        self._buf = bytearray()
        if self._paused:
            self._resume()
        ws.dataReceived(data)

    # -- request body --------------------------------------------------------

    def _body_data(self, data, last):
        server = self.server
        if data:
            self._body_total += len(data)
            if self._body_total > server.max_request_body > 0:
                raise HTTPError(413, "request body larger than --max-request-body")
            self._body_parts.append(data)
            self._body_buffered += len(data)
        if last:
            self._body_done = True
            self._state = _RESPONDING
            self._timer.clear()
        if not (last or self._body_buffered >= server.body_chunk_size):
            return
        content = b"".join(self._body_parts) if len(self._body_parts) != 1 else self._body_parts[0]
        self._body_parts = []
        self._body_buffered = 0
        if not self._dispatched:
            self._dispatch(content, not last)
        else:
            self._send_body({"content": content, "more_content": not last, "closed": False})

    def _dispatch(self, body, more):
        """Send the ``http.request`` message (with ``body_channel`` when more body follows)."""
        server = self.server
        unreceivable = server.replies_unreceivable()
        if unreceivable is not None:
            self._request_not_sent(unreceivable)
            return
        message = self._message
        message["body"] = body
        if more:
            self._body_channel = message["body_channel"] = server.new_body_channel()
        self._dispatched = True
        server.register(self._reply_channel, self)
        self._blocked = True
        d = server.layer.send("http.request", message)
        d.addCallbacks(self._request_sent, self._request_not_sent)

    def _request_sent(self, _):
        if self._state == _CLOSED:
            return
        # With a remote layer the response may already be here (and done).
        if self._dispatched and not self._response_started:
            self._response_timer.set(self.server.http_timeout, self._response_timed_out)
        self._unblock()

    def _request_not_sent(self, failure):
        if self._state == _CLOSED:
            return
        self._blocked = False
        self._dispatched = False  # the consumer never saw it: no http.disconnect
        body = b"Service Unavailable: server overloaded"
        if failure.check(ChannelFull):
            self.server.warn_sometimes("http-full", "http.request is full; answering 503 to {client}",
                                       client=self.client)
            self.server.count("http_channel_full")
        elif failure.check(LayerUnavailable):
            self.server.warn_sometimes(
                "http-unavailable", "Channel layer unavailable ({error}); answering 503 to {client}",
                error=failure.getErrorMessage(), client=self.client)
            self.server.count("http_layer_unavailable")
            body = b"Service Unavailable: channel layer unavailable"
        else:
            self._log.failure("Could not send http.request", failure)
        self._fail(503, "channel layer refused the request", body=body)

    def _send_body(self, message):
        self._blocked = True
        self._pending_body = message
        d = self.server.layer.send(self._body_channel, message)
        d.addCallbacks(self._body_sent, self._body_not_sent)

    def _body_sent(self, _):
        self._pending_body = None
        self._retry_delay = 0.0
        if self._state != _CLOSED:
            if not self._body_done:
                self._timer.extend(self.server.body_timeout)  # the consumer is making progress
            self._unblock()

    def _body_not_sent(self, failure):
        if self._state == _CLOSED:
            return
        if not failure.check(ChannelFull):
            self._log.failure("Could not send a request body chunk; closing", failure)
            self._state = _CLOSED
            self.transport.abortConnection()
            return
        # Backpressure: stop reading the socket, retry the same chunk later.
        self._retry_delay = min(max(self._retry_delay * 2, 0.01), 1.0)
        self._retry = self.server.reactor.callLater(self._retry_delay, self._retry_body)
        self._flow()

    def _retry_body(self):
        self._retry = None
        if self._state != _CLOSED:
            self._send_body(self._pending_body)

    def _unblock(self):
        self._blocked = False
        self._process()

    def _flow(self):
        """Read the socket only while the layer takes our sends and the buffer is small."""
        if self._state >= _UPGRADED:
            return
        if self._retry is not None or len(self._buf) > self.server.max_buffer:
            self._pause()
        else:
            self._resume()

    # -- response ------------------------------------------------------------

    def reply(self, message):
        """
        Handle one message from this request's reply channel.

        A message with C{ack_channel} is acknowledged on that channel once
        its content is written and the unsent output is small again (see
        L{chanserve.server._flow}).
        """
        ack = message.get("ack_channel")
        if self._state == _CLOSED or self._response_done:
            if ack is not None:
                self.server.send_quietly(ack, ACK_CLOSED)
            return
        if ack is not None or (self._buf and not self._response_started):
            # Watched for acknowledgements, or because requests are pipelined
            # behind this one: they wait until the client has read it.
            if self._output is None:
                self._output = OutputGate(self.transport, self.server.send_quietly)
            self._output.watch()  # before writing: the transport pauses us if it fills
        try:
            if message.get("abort"):
                self._cut_response("the application aborted it")
            elif self._response_started and "status" in message:
                # A second start (a 500 for a consumer that failed mid-way,
                # say): the status line went long ago, so the response is cut.
                self._cut_response("a second status after the response started")
            else:
                if not self._response_started:
                    self._start_response(message)
                else:
                    content = message.get("content", b"")
                    if content:
                        self._write_content(content)
                if not message.get("more_content", False):
                    self._finish_response()
        except (TypeError, ValueError) as e:
            self._log.error("Invalid response message for {path!r}: {error}",
                            path=self._message["path"], error=e)
            if self._response_started:
                self._state = _CLOSED
                self.transport.abortConnection()
            else:
                self._fail(500, "invalid response message")
        output = self._output
        if ack is not None:
            if self._state == _CLOSED or output is None:
                self.server.send_quietly(ack, ACK_CLOSED)
            else:
                output.ack(ack)
        if output is not None and not message.get("more_content", False):
            # Response over: a producer left registered would keep loseConnection waiting.
            output.release()

    def _start_response(self, message):
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 999:
            raise ValueError(f"response status must be an int, not {status!r}")
        content = message.get("content", b"")
        if type(content) is not bytes:
            raise TypeError(f"response content must be bytes, not {type(content).__name__}")
        more = bool(message.get("more_content", False))
        head = self._head
        server = self.server
        lines = [status_line(status)]
        has_length = has_date = has_server = False
        length = None
        for header in message.get("headers", ()):
            lname, line = response_header(header[0], header[1])
            if lname in _FRAMING:
                if lname == b"content-length":
                    value = line[16:-2].strip()
                    if not value.isdigit() or (length is not None and int(value) != length):
                        raise ValueError(f"bad response Content-Length {header[1]!r}")
                    length = int(value)
                    has_length = True
                elif lname == b"transfer-encoding":
                    continue  # framing is ours to choose
                elif lname == b"connection":
                    if b"close" in line.lower():
                        self._keep_alive = False
                    continue
                elif lname == b"date":
                    has_date = True
                else:
                    has_server = True
            lines.append(line)
        no_body = status in _NO_BODY_STATUS or status < 200
        self._write_body = not (no_body or head.method == "HEAD")
        if length is not None and self._write_body:
            self._length_left = length
        if not has_length and not no_body:
            if not more:
                lines.append(b"Content-Length: %d\r\n" % len(content))
            elif head.http_version == "1.1":
                self._chunked_response = self._write_body
                if head.method != "HEAD":
                    lines.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self._keep_alive = False
        if not self._body_done:
            self._keep_alive = False  # the rest of the request body would have to be read
        if not has_date:
            lines.append(server.date_header())
        if not has_server:
            lines.append(b"Server: chanserve\r\n")
        if not self._keep_alive:
            lines.append(b"Connection: close\r\n")
        elif head.http_version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self._response_started = True
        self._status = status
        self._response_timer.clear()
        if content and self._write_body:
            if length is not None:
                content = self._within_length(content)
            if self._chunked_response:
                lines.append(b"%x\r\n" % len(content))
                lines.append(content)
                lines.append(b"\r\n")
            else:
                lines.append(content)
            self._bytes_sent += len(content)
        self.transport.write(b"".join(lines))

    def _write_content(self, content):
        if type(content) is not bytes:
            raise TypeError(f"response content must be bytes, not {type(content).__name__}")
        if not self._write_body:
            return
        if self._length_left is not None:
            content = self._within_length(content)
        self._bytes_sent += len(content)
        if self._chunked_response:
            self.transport.writeSequence((b"%x\r\n" % len(content), content, b"\r\n"))
        else:
            self.transport.write(content)

    def _within_length(self, content):
        """
        ``content`` cut to what the response's Content-Length still allows
        (more would be read by the client as the next response).
        """
        left = self._length_left
        if len(content) > left:
            self.server.warn_sometimes(
                "over-length", "Response to {path!r} is longer than its Content-Length; "
                "the rest is not sent", path=self._message["path"])
            content = content[:left]
        self._length_left = left - len(content)
        return content

    def _cut_response(self, reason):
        """
        End a response that can't be completed: close the connection without
        ending its body (no last chunk), so the client sees it cut short; a
        500 if it hadn't started.
        """
        if not self._response_started:
            self._fail(500, reason)
            return
        self._log.info("Response to {client} for {path!r} cut short: {reason}",
                       client=self.client, path=self._message["path"], reason=reason)
        self._access_log(self._status)
        if self._write_body and not self._chunked_response and self._length_left is None:
            # Its end is the connection's end (HTTP/1.0, say): only a reset tells it apart.
            self.transport.abortConnection()
        self._fail(self._status, reason)

    def _finish_response(self):
        if self._length_left:
            self.server.warn_sometimes(
                "short-response", "Response to {path!r} ended {missing} byte(s) short of its "
                "Content-Length; connection closed", path=self._message["path"],
                missing=self._length_left)
            self._cut_response("shorter than its Content-Length")
            return
        if self._chunked_response:
            self.transport.write(b"0\r\n\r\n")
        self._response_done = True
        self._access_log(self._status)
        self.server.unregister(self._reply_channel)
        if not self._keep_alive or self.server.stopping:
            self._state = _CLOSED
            self._cancel_timers()
            self.transport.loseConnection()
            return
        self._reset_request()
        self._state = _HEAD
        if self._buf and not self._buf.strip(b"\r\n"):
            # Only the CRLF some clients send after a body: nothing is coming.
            self._buf.clear()
        if self._buf:
            output = self._output
            if output is not None and output.paused:
                # A pipelined request waits until the client reads this response.
                self._timer.clear()
                self._blocked = True
                output.when_drained(self._pipeline_drained)
                return
            self._timer.set(self.server.header_timeout, self._header_timed_out)
        else:
            self._timer.set(self.server.idle_timeout, self._idle_timed_out)
        self._process()

    def _pipeline_drained(self):
        self._blocked = False
        if self.server.stopping:
            self._state = _CLOSED
            self._cancel_timers()
            self.transport.loseConnection()
            return
        if self._state == _HEAD and self._buf:
            self._timer.set(self.server.header_timeout, self._header_timed_out)
        self._process()

    def _access_log(self, status):
        log = self.server.access_log
        if log is not None:
            message = self._message
            log.http(self.server.reactor.seconds() - self._started, message["client"],
                     message["method"], message["path"], message["query_string"],
                     status, self._bytes_sent)

    def _fail(self, status, reason, body=None):
        """Answer ``status`` (unless a response started) and close the connection."""
        if self._state == _CLOSED:
            return
        self._log.debug("{status} to {client}: {reason}", status=status, client=self.client,
                        reason=reason)
        if not self._response_started:
            if body is None:
                body = b"%d %s\n" % (status, status_line(status)[13:-2])
            self.transport.write(b"".join([
                status_line(status),
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % len(body),
                self.server.date_header(),
                b"Server: chanserve\r\nConnection: close\r\n\r\n",
                body]))
            self._status = status
            self._bytes_sent = len(body)
            if self._message is not None:
                self._access_log(status)
            elif self.server.access_log is not None:
                self.server.access_log.refused(self.client, status, reason)
        if self._reply_channel is not None:
            self.server.unregister(self._reply_channel)
        if self._dispatched and not self._response_done:
            self._response_done = True
            if self._body_channel is not None and not self._body_done:
                self.server.send_quietly(self._body_channel,
                                         {"content": b"", "more_content": False, "closed": True})
        self._state = _CLOSED
        self._cancel_timers()
        self._buf = bytearray()
        if self._output is not None:
            self._output.close()
        self.transport.loseConnection()

