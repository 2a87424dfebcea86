"""Strict parsing of HTTP/1.x request heads (RFC 9112), and response-head helpers."""

import re
from http.client import responses as _reasons
from urllib.parse import unquote_to_bytes

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# name ":" OWS value OWS; the value may hold HTAB, visible ASCII and obs-text,
# never other control characters (a bare CR or LF is one of them).
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_OTHER_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
# The authority of an absolute-form target (userinfo@host:port).
_AUTHORITY = re.compile(rb"[^/?]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;.*)?")
_STATUS_LINES = {}
_SPECIAL = frozenset([b"content-length", b"transfer-encoding", b"host", b"connection",
                      b"upgrade", b"expect"])
# Header lines repeat from request to request (User-Agent, Accept...): their
# parse is cached, bounded, for lines short enough to be worth it.
_LINE_CACHE = {}
_RESPONSE_CACHE = {}
_CACHE_LIMIT = 4096
_CACHE_LINE = 256


class HTTPError(Exception):
    """A request we refuse: ``status`` is the response code, ``reason`` says why (for the log)."""

    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class RequestHead:
    """The parsed request line and header fields of one request."""

    __slots__ = ("method", "target", "http_version", "path_bytes", "query_string",
                 "headers", "content_length", "chunked", "keep_alive", "host",
                 "upgrade", "expect_continue")

    def path(self):
        """The percent-decoded path as a str (invalid UTF-8 replaced)."""
        raw = self.path_bytes
        if b"%" not in raw:
            return raw.decode("ascii")
        return unquote_to_bytes(raw).decode("utf-8", "replace")


def is_token(text):
    """Whether ``text`` (str) is an RFC 9110 token (a header name, a WebSocket subprotocol)."""
    try:
        return _TOKEN.fullmatch(text.encode("ascii")) is not None
    except UnicodeEncodeError:
        return False


def parse_head(head):
    """
    Parse a request head (the bytes before the blank line) into a L{RequestHead}.

    Raise L{HTTPError} for anything malformed or ambiguous. Header names are
    lowercased; names containing ``_`` are dropped, as are their values.
    """
    end = head.find(b"\r\n")
    request_line = head if end < 0 else head[:end]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HTTPError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HTTPError(400, "malformed method")
    http_version = _VERSIONS.get(version)
    if http_version is None:
        if _OTHER_VERSION.fullmatch(version):
            raise HTTPError(505, "unsupported HTTP version")
        raise HTTPError(400, "malformed HTTP version")
    if not _TARGET.fullmatch(target):
        raise HTTPError(400, "malformed request target")

    headers = []
    content_length = None
    transfer_encoding = None
    host = None
    connection = b""
    upgrade = None
    expect = None
    if end >= 0:
        match = _FIELD_LINE.fullmatch
        cache = _LINE_CACHE
        for line in head[end + 2:].split(b"\r\n"):
            parsed = cache.get(line)
            if parsed is None:
                m = match(line)
                if m is None:
                    raise HTTPError(400, "malformed header field")
                parsed = (m.group(1).lower(), m.group(2))
                if len(line) <= _CACHE_LINE:
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[line] = parsed
            name, value = parsed
            if b"_" in name:
                continue
            headers.append([name, value])
            if name not in _SPECIAL:
                continue
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise HTTPError(400, "malformed Content-Length")
                if content_length is not None:
                    # RFC 9112 6.3 allows merging equal values; like gunicorn,
                    # uvicorn and Daphne we refuse: one message, one length.
                    raise HTTPError(400, "more than one Content-Length field")
                content_length = int(value)
            elif name == b"transfer-encoding":
                transfer_encoding = value if transfer_encoding is None else transfer_encoding + b"," + value
            elif name == b"host":
                if host is not None:
                    raise HTTPError(400, "more than one Host field")
                host = value
            elif name == b"connection":
                connection = connection + b"," + value if connection else value
            elif name == b"upgrade":
                upgrade = value
            elif name == b"expect":
                expect = value

    chunked = False
    if transfer_encoding is not None:
        if http_version == "1.0":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if content_length is not None:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if transfer_encoding.strip().lower() != b"chunked":
            raise HTTPError(501, "unsupported Transfer-Encoding")
        chunked = True
    if http_version == "1.1" and host is None:
        raise HTTPError(400, "missing Host field")

    if b"#" in target:  # clients must not send a fragment; never pass one on
        target = target.partition(b"#")[0]
    if target[:1] == b"/":  # origin-form, the usual case
        path_bytes, _, query = target.partition(b"?")
    elif target == b"*" and method == b"OPTIONS":
        path_bytes, query = b"*", b""
    elif target.startswith((b"http://", b"https://")):
        # absolute-form: the authority ends at the first "/" or "?" (RFC 3986
        # 3.2) and replaces Host (RFC 9112 3.2.2).
        authority = _AUTHORITY.match(target, target.index(b"//") + 2)
        userinfo, _, host = authority.group().rpartition(b"@")
        if not host or b"@" in userinfo:
            raise HTTPError(400, "malformed authority in an absolute-form target")
        rest = target[authority.end():]
        path_bytes, _, query = (rest if rest[:1] == b"/" else b"/" + rest).partition(b"?")
        headers = [field for field in headers if field[0] != b"host"]
        headers.append([b"host", host])
    else:
        raise HTTPError(400, "malformed request target")

    tokens = [t.strip() for t in connection.lower().split(b",")] if connection else ()
    if http_version == "1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens

    request = RequestHead()
    request.method = method.decode("ascii")
    request.target = target
    request.http_version = http_version
    request.path_bytes = path_bytes
    request.query_string = query
    request.headers = headers
    request.content_length = content_length
    request.chunked = chunked
    request.keep_alive = keep_alive
    request.host = host
    request.upgrade = (
        upgrade is not None and b"upgrade" in tokens
        and b"websocket" in [t.strip() for t in upgrade.lower().split(b",")])
    request.expect_continue = (
        expect is not None and expect.lower() == b"100-continue" and http_version == "1.1")
    return request


def check_field_line(line):
    """Raise L{HTTPError} (400) unless ``line`` is a well-formed field line (a trailer)."""
    if _FIELD_LINE.fullmatch(line) is None:
        raise HTTPError(400, "malformed trailer field")


def parse_chunk_size(line):
    """The size in a chunk-size line (extensions ignored); L{HTTPError} if malformed."""
    m = _CHUNK_SIZE.fullmatch(line)
    if m is None:
        raise HTTPError(400, "malformed chunk size")
    return int(m.group(1), 16)


def status_line(status):
    """``b"HTTP/1.1 200 OK\\r\\n"`` for ``status`` (cached)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _reasons.get(status, "Unknown")
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("ascii"))
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[status] = line
    return line


_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def response_header(name, value):
    """
    ``(lowercased name, b"Name: value\\r\\n")`` for a response header; ``ValueError`` if unsafe.

    Results are cached: applications send the same few headers over and over.
    """
    try:
        return _RESPONSE_CACHE[(name, value)]
    except (KeyError, TypeError):
        pass
    raw_name, raw_value = check_response_header(name, value)
    result = (raw_name.lower(), b"%s: %s\r\n" % (raw_name, raw_value))
    if len(raw_value) <= _CACHE_LINE and type(name) in (str, bytes) and type(value) in (str, bytes):
        if len(_RESPONSE_CACHE) >= _CACHE_LIMIT:
            _RESPONSE_CACHE.clear()
        _RESPONSE_CACHE[(name, value)] = result
    return result


def check_response_header(name, value):
    """
    Return ``(name, value)`` as bytes if they are safe to write, else raise ``ValueError``.

    Refuses what would split a response (CR, LF, other control characters)
    or is not a token name.
    """
    if type(name) is str:
        name = name.encode("latin-1")
    if type(value) is str:
        value = value.encode("latin-1")
    elif type(value) is int:
        value = b"%d" % value
    if type(name) is not bytes or type(value) is not bytes:
        raise ValueError(f"response header {name!r}: {value!r} is not bytes")
    if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
        raise ValueError(f"unsafe response header {name!r}: {value!r}")
    return name, value
