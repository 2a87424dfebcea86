"""
Redis connections for the Redis layer: txredisapi's protocol with a faster
reply parser, endpoints built from ``hosts`` entries with an injected reactor,
and Lua scripts run by SHA.
"""

import hashlib
from collections import deque
from urllib.parse import parse_qs, unquote, urlsplit

import warnings

with warnings.catch_warnings():
    # txredisapi builds a set mixing bytes and str at import time.
    warnings.simplefilter("ignore", BytesWarning)
    import txredisapi
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.logger import Logger

ConnectionError = txredisapi.ConnectionError
ResponseError = txredisapi.ResponseError

_CRLF = b"\r\n"


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


def _parse(buf, pos):
    """One RESP2 reply from ``buf`` at ``pos``: ``(value, next_pos)``; raises ``_Incomplete``."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete()
    kind = buf[pos]
    if kind == 36:  # $ bulk
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete()
        return bytes(buf[end + 2:stop]), stop + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(buf[pos + 1:end]), end + 2
    if kind == 43:  # + status
        return buf[pos + 1:end].decode("utf-8", "replace"), end + 2
    if kind == 45:  # - error
        return ResponseError(buf[pos + 1:end].decode("utf-8", "replace")), end + 2
    raise txredisapi.InvalidResponse(f"unexpected reply type {bytes(buf[pos:pos + 1])!r}")


class RedisProtocol(txredisapi.BaseRedisProtocol):
    """
    txredisapi's Redis protocol with a one-pass RESP parser.

    Replies are never decoded: bulk strings are ``bytes``, errors
    ``ResponseError``s whose text starts with the Redis error code. (The
    stock parser takes a reactor turn per bulk reply of a pipelined batch and
    uses the global reactor for it.) ``on_lost`` is called with the reason
    when the connection ends.
    """

    _log = Logger()
    on_lost = None
    #: An ``IReactorTime`` and a default reply timeout (seconds) for the
    #: watchdog; with no clock, commands wait for their replies for ever.
    clock = None
    timeout = None

    def __init__(self, password=None, dbid=None, username=None):
        super().__init__(charset=None, replyTimeout=None, password=password,
                         dbid=dbid, convertNumbers=False, username=username)
        self._buf = bytearray()
        self._deadlines = deque()
        self._watchdog = None
        self.client_id = None

    def _build_command(self, *args, **kwargs):
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if type(arg) is str:
                arg = arg.encode("utf-8")
            elif type(arg) is int:
                arg = b"%d" % arg
            elif not isinstance(arg, bytes):
                arg = self._encode_value(arg)
            parts.append(b"$%d\r\n" % len(arg))
            parts.append(arg)
            parts.append(b"\r\n")
        return b"".join(parts)

    # -- the watchdog: one timer per connection, for the oldest reply due ----

    def execute_command(self, *args, timeout=None, **kwargs):
        d = super().execute_command(*args, **kwargs)
        if timeout is None:
            timeout = self.timeout
        if self.clock is not None and timeout is not None:
            deadline = self.clock.seconds() + timeout
            # Replies come in order: a command queued behind a blocking one
            # (BLPOP) can't be due before it.
            for previous in reversed(self._deadlines):
                if previous is not None:
                    deadline = max(deadline, previous)
                    break
            self._deadlines.append(deadline)
            if self._watchdog is None:
                self._arm()
        else:
            self._deadlines.append(None)
        return d

    def replyReceived(self, reply):
        if self._deadlines:
            self._deadlines.popleft()
        super().replyReceived(reply)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
            self._arm()

    def _arm(self):
        for deadline in self._deadlines:
            if deadline is not None:
                delay = max(0.0, deadline - self.clock.seconds())
                self._watchdog = self.clock.callLater(delay, self._expired)
                return

    def _expired(self):
        self._watchdog = None
        self._log.warn("No reply from Redis for a command in time; dropping the connection")
        self.abort()

    def dataReceived(self, data, unpause=False):
        buf = self._buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                reply, pos = _parse(buf, pos)
                self.replyReceived(reply)
        except _Incomplete:
            pass
        except Exception:
            self.transport.abortConnection()
            raise
        finally:
            del buf[:pos]

    def connectionMade(self):
        d = super().connectionMade()  # AUTH and SELECT; whenConnected() fires after
        on_made = getattr(self.factory, "on_made", None)
        if on_made is not None:
            on_made(self)
        return d

    def connectionLost(self, why=protocol.connectionDone):
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._deadlines.clear()
        # Tell the owner first, so code run by the failing commands' errbacks
        # already sees the connection as gone.
        if self.on_lost is not None:
            callback, self.on_lost = self.on_lost, None
            callback(self, why)
        # txredisapi leaves whenConnected() waiting for ever when the
        # connection ends before it was ready.
        waiting, self._waiting_for_connect = self._waiting_for_connect, []
        super().connectionLost(why)
        for d in waiting:
            d.errback(ConnectionError(f"connection lost before it was ready: {why.getErrorMessage()}"))

    def command(self, *args, timeout=None):
        """Run one command; fails with ``ConnectionError`` when not connected."""
        try:
            return self.execute_command(*args, timeout=timeout)
        except Exception:
            return defer.fail()

    def abort(self):
        if self.transport is not None:
            self.transport.abortConnection()


class RedisClientFactory(protocol.Factory):
    """Builds ``RedisProtocol``s; holds what txredisapi's protocol asks its factory."""

    _log = Logger()
    protocol = RedisProtocol
    # Not lazy: txredisapi would log each AUTH/SELECT failure a second time.
    isLazy = False
    noisy = False

    def __init__(self, address, clock=None, timeout=None, on_lost=None, on_made=None):
        self.address = address
        self.clock = clock
        self.timeout = timeout
        self.on_lost = on_lost
        self.on_made = on_made
        self._error = None

    def buildProtocol(self, addr):
        p = RedisProtocol(password=self.address.password, dbid=self.address.db,
                          username=self.address.username)
        p.factory = self
        p.clock = self.clock
        p.timeout = self.timeout
        p.on_lost = self.on_lost
        return p

    def stopTrying(self):
        """Called by the protocol when AUTH or SELECT fails; the caller sees the failure."""

    def connectionError(self, message):
        """AUTH or SELECT failed (txredisapi calls this): kept for the owner to report once."""
        self._error = message

    def take_error(self):
        """The last AUTH/SELECT failure message (then forgotten), or None."""
        message, self._error = self._error, None
        return message


class RedisAddress:
    """Where one Redis server is: built from a ``hosts`` entry."""

    def __init__(self, kind, host=None, port=6379, path=None, db=None, password=None,
                 username=None, tls_verify=True, tls_ca=None):
        self.kind = kind
        self.host = host
        self.port = port
        self.path = path
        self.db = db
        self.password = password
        self.username = username
        self.tls_verify = tls_verify
        self.tls_ca = tls_ca

    @classmethod
    def parse(cls, entry):
        """
        Parse ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``
        (TLS; ``?ssl_ca_certs=/path/ca.pem`` trusts that CA instead of the
        system's, ``?ssl_cert_reqs=none`` skips verification),
        ``unix:///path/to/socket[?db=N]`` or a ``(host, port)`` tuple.
        """
        if isinstance(entry, (tuple, list)):
            if len(entry) != 2 or not isinstance(entry[0], str) or not isinstance(entry[1], int):
                raise ValueError(f"a hosts tuple must be (host, port), not {entry!r}")
            return cls("tcp", host=entry[0], port=entry[1])
        if not isinstance(entry, str):
            raise ValueError(f"hosts entries must be URLs or (host, port) tuples, not {entry!r}")
        url = urlsplit(entry)
        if url.password:
            # Errors show the URL without its password (userinfo ends at the last "@").
            userinfo, _, hostport = url.netloc.rpartition("@")
            entry = entry.replace(url.netloc, userinfo.split(":", 1)[0] + ":***@" + hostport, 1)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        db = query.get("db")
        password = unquote(url.password) if url.password else None
        username = unquote(url.username) if url.username else None
        if url.scheme in ("redis", "rediss"):
            if not url.hostname:
                raise ValueError(f"no host in Redis URL {entry!r}")
            path_db = url.path.strip("/")
            if path_db:
                db = path_db
            try:
                port = url.port or 6379
                db = int(db) if db not in (None, "") else None
            except ValueError as e:
                raise ValueError(f"bad port or database in Redis URL {entry!r}: {e}") from None
            return cls("tls" if url.scheme == "rediss" else "tcp", host=url.hostname, port=port,
                       db=db, password=password, username=username,
                       tls_verify=query.get("ssl_cert_reqs", "required").lower() != "none",
                       tls_ca=query.get("ssl_ca_certs"))
        if url.scheme == "unix":
            path = url.path or url.netloc
            if not path:
                raise ValueError(f"no socket path in Redis URL {entry!r}")
            try:
                db = int(db) if db not in (None, "") else None
            except ValueError:
                raise ValueError(f"bad database in Redis URL {entry!r}") from None
            return cls("unix", path=path, db=db, password=password, username=username)
        raise ValueError(
            f"unsupported Redis URL {entry!r}: use redis://, rediss:// or unix://, "
            f"or a (host, port) tuple")

    def endpoint(self, reactor, timeout):
        """An ``IStreamClientEndpoint`` for this address, connecting with ``reactor``."""
        if self.kind == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if self.kind == "tls":
            from twisted.internet import ssl
            if self.tls_verify:
                trust = None
                if self.tls_ca:
                    with open(self.tls_ca, "rb") as f:
                        trust = ssl.Certificate.loadPEM(f.read())
                options = ssl.optionsForClientTLS(self.host, trustRoot=trust)
            else:
                options = ssl.CertificateOptions(verify=False)
            endpoint = wrapClientTLS(options, endpoint)
        return endpoint

    def __str__(self):
        if self.kind == "unix":
            return f"unix://{self.path}"
        scheme = "rediss" if self.kind == "tls" else "redis"
        return f"{scheme}://{self.host}:{self.port}" + (f"/{self.db}" if self.db is not None else "")

    __repr__ = __str__


class LuaScript:
    """A Lua script run with EVALSHA, falling back to EVAL when the server lacks it."""

    def __init__(self, source):
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest()

    def __call__(self, proto, keys, args):
        d = proto.command("EVALSHA", self.sha, len(keys), *keys, *args)
        d.addErrback(self._retry, proto, keys, args)
        return d

    def _retry(self, f, proto, keys, args):
        f.trap(ResponseError)
        if not str(f.value).startswith("NOSCRIPT"):
            return f
        return proto.command("EVAL", self.source, len(keys), *keys, *args)
