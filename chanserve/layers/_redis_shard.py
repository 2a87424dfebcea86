"""
The Redis layer's connections to one server (``_Shard``) and its pending
receives (``_Receive``).

A shard keeps one command connection under ``ClientService`` (reconnecting
with backoff) and a small pool of connections for blocking reads; a receive
blocks (``BLPOP``) on a pooled connection of each shard its channels live on.
"""

import random
import struct
from collections import deque

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python import failure

from ..exceptions import LayerUnavailable
from . import _redis_scripts as scripts
from ._redis_connection import ConnectionError, RedisClientFactory, ResponseError

_HEADER = struct.Struct(">dH")

#: Seconds a BLPOP blocks in Redis before it is renewed (a liveness check of
#: the connection, not a poll: messages wake it at once).
BLOCK_SECONDS = 20
#: Most messages of a process prefix taken from Redis in one step.
BATCH = 100
#: Idle blocking connections kept per shard.
IDLE_BLOCKING = 8

_COUNTERS = (
    "messages_sent", "messages_delivered", "messages_expired", "messages_dropped",
    "channel_full", "group_sends", "group_members_full", "messages_lost",
    "messages_undecodable", "sends_unavailable", "connection_losses", "reconnects",
    "redis_restarts",
)


def _name_of(envelope):
    try:
        _, n = _HEADER.unpack_from(envelope)
        return envelope[10:10 + n].decode("ascii")
    except Exception:
        return None


def _jitter():
    return random.random() * 0.25


def _float(x):
    return repr(float(x))


class _Shard:
    """One Redis server: a reconnecting command connection and blocking connections."""

    _log = Logger()

    def __init__(self, layer, index, address):
        self.layer = layer
        self.index = index
        self.address = address
        # The command connection (under ClientService) and the blocking ones.
        self.factory = RedisClientFactory(address, layer.reactor, layer.command_timeout, self._lost,
                                          on_made=self._made)
        self.blocking_factory = RedisClientFactory(
            address, layer.reactor, layer.command_timeout, self._blocking_lost)
        self.service = None
        self.protocol = None
        self.state = "connecting"  # "up", "down", "stopped"
        self.run_id = None
        self.refused = 0
        self._waiters = []  # (deferred, fail_when_down)
        self.idle = []
        self.blocking = set()
        self._settling = {}  # busy blocking protocol -> [Deferred waiting for it to be idle]
        self._watch = None
        self._in_setup = set()  # command connections made, not yet set up
        # Connections that connected but failed their set-up (AUTH, SELECT,
        # TLS, INFO) in a row: ClientService counts them as successes, so
        # they are added to its count of failed attempts for the backoff.
        self.setup_failures = 0
        self.blocking_failures = 0
        self.client_denied = False
        self.last_error = None  # why the server is unavailable, for errors and logs

    _backoff = staticmethod(backoffPolicy(initialDelay=0.1, maxDelay=10.0, jitter=_jitter))

    def _retry_delay(self, attempt):
        return self._backoff(attempt + self.setup_failures)

    # -- the command connection ---------------------------------------------

    def start(self):
        layer = self.layer
        self.state = "connecting"
        endpoint = self.address.endpoint(layer.reactor, layer.connect_timeout)
        self.service = ClientService(
            endpoint, self.factory, retryPolicy=self._retry_delay, clock=layer.reactor)
        self.service.startService()
        self.service.whenConnected(failAfterFailures=1).addErrback(self._first_attempt_failed)

    def stop(self):
        self.state = "stopped"
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None
        self._fire_waiters(LayerUnavailable(f"the channel layer has stopped ({self.address})"),
                           everyone=True)
        ds = []
        for proto in list(self.blocking):
            proto.on_lost = None
            ds.append(proto.whenDisconnected())
            proto.abort()
        self.blocking.clear()
        self.idle = []
        for proto in list(self._in_setup):
            # Not a clean close: a TLS handshake the server never answers
            # (rediss:// to a plain port) would hold the stop until the watchdog.
            proto.abort()
        self._in_setup.clear()
        if self.service is not None:
            # Not from inside one of ClientService's own transitions (this can
            # run in a callback of a failed connection attempt): next turn.
            service, self.service = self.service, None
            ds.append(task.deferLater(self.layer.reactor, 0, service.stopService))
        self.protocol = None
        return defer.DeferredList(ds, consumeErrors=True)

    def _first_attempt_failed(self, f):
        if f.check(defer.CancelledError) or self.state != "connecting":
            return
        self.state = "down"
        self.last_error = f.getErrorMessage()
        self._log.warn("Cannot connect to Redis at {address}: {error}; retrying",
                       address=self.address, error=self.last_error)
        self._fire_waiters(self._unavailable())

    def _made(self, proto):
        """A new command connection (made by ClientService): set it up, then we're up."""
        proto.on_lost = self._lost_in_setup
        self._in_setup.add(proto)
        d = self._setup(proto)
        d.addBoth(self._setup_ended, proto)
        d.addErrback(self._setup_failed, proto)

    def _setup_ended(self, result, proto):
        self._in_setup.discard(proto)
        return result

    def _lost_in_setup(self, proto, why):
        # The reason (a TLS verification error, a reset...) is what an
        # operator needs: keep it for the set-up failure's line.
        if not why.check(ConnectionDone):
            proto.lost_reason = why.getErrorMessage()

    def _setup_failed(self, f, proto):
        # ClientService sees the connection end and tries again later.
        # (Not a prepareConnection: its machine can't handle a connection
        # lost while being prepared.)
        if self.state == "stopped":
            return
        proto.on_lost = None
        reason = self.factory.take_error() or f.getErrorMessage()
        lost = getattr(proto, "lost_reason", None)
        if lost and lost not in reason:
            reason = f"{reason} ({lost})"
        self.setup_failures += 1
        if reason != self.last_error:
            # One line per new reason, not one per attempt.
            self._log.warn("Setting up the connection to Redis at {address} failed: {error}; "
                           "retrying with backoff", address=self.address, error=reason)
        self.last_error = reason
        if self.state == "connecting":
            self.state = "down"
            self._fire_waiters(self._unavailable())
        proto.abort()

    @defer.inlineCallbacks
    def _setup(self, proto):
        yield proto.whenConnected()
        replies = yield defer.gatherResults(
            [proto.command("INFO", "server")]
            + [proto.command("SCRIPT", "LOAD", script.source) for script in scripts.ALL],
            consumeErrors=True).addErrback(lambda f: f.value.subFailure)
        info = replies[0]
        run_id = None
        for line in info.split(b"\r\n"):
            if line.startswith(b"run_id:"):
                run_id = line[7:].decode("ascii", "replace")
        if self.state == "stopped":
            proto.abort()
            return
        if self.run_id is not None and self.run_id != run_id:
            # Only once the memberships are back is the restart dealt with.
            yield self.layer._restore_groups(self, proto)
            self.layer._stats["redis_restarts"] += 1
            self._log.warn("Redis at {address} restarted: the messages queued there are gone",
                           address=self.address)
        if self.state == "stopped":
            proto.abort()
            return
        if self.run_id is not None:
            self.layer._stats["reconnects"] += 1
            self._log.info("Reconnected to Redis at {address}", address=self.address)
        elif self.last_error is not None:
            self._log.info("Connected to Redis at {address}", address=self.address)
        self.run_id = run_id
        self.setup_failures = 0
        self.last_error = None
        proto.on_lost = self._lost
        self.protocol = proto
        if self.refused:
            self._log.warn("{count} send(s) were refused while Redis at {address} was down",
                           count=self.refused, address=self.address)
            self.refused = 0
        self.state = "up"
        self._fire_waiters(None, everyone=True)

    def _lost(self, proto, why):
        if proto is not self.protocol:
            return
        self.protocol = None
        if self.state == "stopped":
            return
        # Sends wait (up to connect_timeout) for the reconnection, so that a
        # server closing an idle connection costs nothing; once an attempt
        # fails, the server is down and sends fail at once.
        self.state = "connecting"
        self.layer._stats["connection_losses"] += 1
        self._log.warn("Lost the connection to Redis at {address} ({reason}); reconnecting",
                       address=self.address, reason=why.getErrorMessage())
        # ClientService learns of the loss just after us.
        self._watch = self.layer.reactor.callLater(0, self._watch_reconnection)

    def _watch_reconnection(self):
        self._watch = None
        if self.service is not None and self.state == "connecting":
            self.service.whenConnected(failAfterFailures=1).addErrback(self._first_attempt_failed)

    def _unavailable(self):
        why = f": {self.last_error}" if self.last_error else ""
        return LayerUnavailable(f"Redis at {self.address} is unavailable{why}")

    def _fire_waiters(self, error, everyone=False):
        keep = []
        for d, fail_when_down in self._waiters:
            if d.called:
                continue
            if error is None:
                d.callback(self.protocol)
            elif everyone or fail_when_down:
                d.errback(error)
            else:
                keep.append((d, fail_when_down))
        self._waiters = keep

    def command_protocol(self, fail_fast=True):
        """
        Fire with the connected command protocol.

        With ``fail_fast``, fails with ``LayerUnavailable`` at once while the
        server is known to be down (and after ``connect_timeout`` while the
        first connection is being made); otherwise waits until it is up.
        """
        if self.state == "up":
            return defer.succeed(self.protocol)
        if self.state == "stopped":
            return defer.fail(LayerUnavailable(f"the channel layer has stopped ({self.address})"))
        if fail_fast and self.state == "down":
            return defer.fail(self._unavailable())
        d = defer.Deferred()
        if len(self._waiters) > 64:
            self._waiters = [w for w in self._waiters if not w[0].called]
        self._waiters.append((d, fail_fast))
        if fail_fast:
            d.addTimeout(self.layer.connect_timeout, self.layer.reactor,
                         onTimeoutCancel=lambda r, t: failure.Failure(self._unavailable()))
        return d

    # -- blocking connections ------------------------------------------------

    def blocking_protocol(self):
        """Fire with an idle blocking connection (made when none is idle), once the server is up."""
        while self.idle:
            proto = self.idle.pop()
            if proto.connected:
                return defer.succeed(proto)
        return self.command_protocol(fail_fast=False).addCallback(self._connect_blocking)

    @defer.inlineCallbacks
    def _connect_blocking(self, _):
        endpoint = self.address.endpoint(self.layer.reactor, self.layer.connect_timeout)
        proto = yield endpoint.connect(self.blocking_factory)
        if self.state == "stopped":
            proto.abort()
            raise LayerUnavailable("the channel layer has stopped")
        self.blocking.add(proto)
        try:
            yield proto.whenConnected()
            try:
                proto.client_id = yield proto.command("CLIENT", "ID")
            except ResponseError as e:
                if str(e).startswith(("NOPERM", "ERR unknown command")) and not self.client_denied:
                    # Without CLIENT UNBLOCK a receive that ends elsewhere
                    # would leave its BLPOP behind (connections pile up, a
                    # message it takes goes back out of order): refuse.
                    self.client_denied = True
                    self._log.error(
                        "Redis at {address} refuses CLIENT ({error}); the channel layer "
                        "needs CLIENT ID and CLIENT UNBLOCK to receive: grant them to its "
                        "user (ACL SETUSER <user> +client|id +client|unblock)",
                        address=self.address, error=e)
                raise
        except BaseException:
            # Failed or cancelled half-way: don't leave it in the pool.
            self.blocking.discard(proto)
            proto.on_lost = None
            proto.abort()
            raise
        if self.blocking_failures:
            self.blocking_failures = 0
            self._log.info("Blocking connections to Redis at {address} work again",
                           address=self.address)
        return proto

    def blocking_failed(self, f):
        """
        A blocking connection could not be made: the seconds to wait before
        trying again (0 while the server is not up: receives then wait for
        its command connection, which has its own backoff).

        Making one can fail while the command connection works: an ACL
        user denied ``CLIENT``, ``maxclients`` reached. Trying again at once
        would spin and flood Redis with connections; the first failure of a
        run is logged with its reason.
        """
        if self.state != "up" or f.check(defer.CancelledError):
            return 0
        self.blocking_failures += 1
        if self.blocking_failures == 1:
            self._log.warn("Cannot open a blocking connection to Redis at {address} for "
                           "receiving: {error}; retrying with backoff",
                           address=self.address,
                           error=self.blocking_factory.take_error() or f.getErrorMessage())
        return self._backoff(self.blocking_failures)

    def _blocking_lost(self, proto, why):
        self.blocking.discard(proto)
        if proto in self.idle:
            self.idle.remove(proto)
        self._settled(proto)

    def settle(self, timeout):
        """Fire when every busy blocking connection is idle again (or after ``timeout``)."""
        ds = []
        for proto in self.blocking:
            if proto not in self.idle:
                d = defer.Deferred()
                self._settling.setdefault(proto, []).append(d)
                ds.append(d)
        if not ds:
            return defer.succeed(None)
        d = defer.DeferredList(ds)
        d.addTimeout(timeout, self.layer.reactor)
        return d.addErrback(lambda f: None)

    def _settled(self, proto):
        for d in self._settling.pop(proto, ()):
            d.callback(None)

    def release(self, proto):
        """Give back a blocking connection that has no command outstanding."""
        self._settled(proto)
        if not proto.connected or proto not in self.blocking:
            return
        if self.state == "up" and len(self.idle) < IDLE_BLOCKING:
            self.idle.append(proto)
        else:
            self.blocking.discard(proto)
            proto.on_lost = None
            proto.transport.loseConnection()

    def unblock(self, proto, tries=3):
        """End ``proto``'s BLPOP early (CLIENT UNBLOCK), or drop the connection."""
        if self.state != "up" or proto.client_id is None:
            proto.abort()
            return

        def done(n):
            # 0: not blocked (yet, or the reply is on its way). Ask again
            # a few times while the BLPOP is outstanding; the BLPOP timeout
            # ends it at the latest.
            if n == 0 and tries > 1 and proto.replyQueue.waiting and proto.connected:
                self.unblock(proto, tries - 1)

        self.protocol.command("CLIENT", "UNBLOCK", proto.client_id).addCallbacks(
            done, lambda f: proto.abort())


class _Receive:
    """
    One pending ``receive``: a BLPOP on each shard its channels live on.

    When a shard's part is one process prefix (an interface server's reply
    loop), the BLPOP is pipelined with a batch pop of that prefix's next
    messages into this process's buffer: one round trip takes a burst.
    """

    def __init__(self, layer, keys):
        self.layer = layer
        self.keys = keys
        self.done = False
        self.pending = {}  # shard -> protocol blocked in BLPOP (None while connecting)
        self.acquiring = {}  # shard -> Deferred of the connection it waits for
        # shard -> [redis key]; redis key (bytes) -> channel name or process prefix
        self.plan, self.names = layer._receive_plan(keys)
        self.deferred = defer.Deferred(self._cancel)
        self._turn = 0

    def start(self):
        self.layer._receives.add(self)
        for shard in list(self.plan):
            self._arm(shard)
        return self.deferred

    def _arm(self, shard):
        self.pending[shard] = None
        d = self.acquiring[shard] = shard.blocking_protocol()
        d.addCallbacks(self._block, self._no_connection, (shard,), None, (shard,))

    def _no_connection(self, f, shard):
        self.pending.pop(shard, None)
        self.acquiring.pop(shard, None)
        if self.done:
            return
        if shard.state == "stopped":
            self._finish(f)
            return
        delay = shard.blocking_failed(f)
        if not delay:
            # The server went away while we connected: wait for it again.
            self._arm(shard)
            return
        self.pending[shard] = None
        d = self.acquiring[shard] = task.deferLater(self.layer.reactor, delay, lambda: None)
        d.addCallbacks(self._rearm, lambda f: None, (shard,))

    def _rearm(self, _, shard):
        self.acquiring.pop(shard, None)
        self.pending.pop(shard, None)
        if not self.done:
            self._arm(shard)

    def _block(self, proto, shard):
        self.acquiring.pop(shard, None)
        if self.done:
            self.pending.pop(shard, None)
            shard.release(proto)
            return
        self.pending[shard] = proto
        layer = self.layer
        keys = self.plan[shard]
        if len(keys) == 1 and keys[0].endswith("!"):
            # One write: give back the counts of messages already read, block,
            # then take whatever else has arrived.
            prefix = self.names[keys[0].encode("ascii")]
            taken = layer._decrements.pop(prefix, [])
            ds = []
            script_keys = [keys[0], layer._counts_key(prefix)]
            now = _float(layer.clock.seconds())
            if taken:
                ds.append(scripts.POP_BATCH(proto, script_keys, [now, 0] + taken))
            ds.append(proto.command("BLPOP", keys[0], BLOCK_SECONDS, timeout=BLOCK_SECONDS + 10))
            ds.append(scripts.POP_BATCH(proto, script_keys, [now, BATCH]))
            d = defer.gatherResults(ds, consumeErrors=True)
            d.addCallback(lambda replies: replies[-2:])
            d.addErrback(self._batch_failed, prefix, taken)
            d.addCallbacks(self._batched, self._pop_failed, (shard, proto, prefix), None,
                           (shard, proto))
            return
        if len(keys) > 1:
            self._turn += 1
            i = self._turn % len(keys)
            keys = keys[i:] + keys[:i]
        blpop = proto.command("BLPOP", *keys, BLOCK_SECONDS, timeout=BLOCK_SECONDS + 10)
        blpop.addCallbacks(self._popped, self._pop_failed, (shard, proto), None, (shard, proto))

    def _batch_failed(self, f, prefix, taken):
        if taken:
            self.layer._decrements.setdefault(prefix, [])[:0] = taken
        return f.value.subFailure if isinstance(f.value, defer.FirstError) else f

    def _batched(self, replies, shard, proto, prefix):
        reply, envelopes = replies
        layer = self.layer
        if reply is not None:
            name = _name_of(reply[1])
            if name is not None:
                layer._decrements.setdefault(prefix, []).append(name)
            envelopes.insert(0, reply[1])
        if envelopes:
            layer._buffers.setdefault(prefix, deque()).extend(envelopes)
        if self.done:
            self.pending.pop(shard, None)
            shard.release(proto)
            # Another receive may be waiting on this prefix: serve it.
            layer._feed_waiters(prefix)
            return
        item = layer._from_buffers([prefix])
        if item is None:
            self._block(proto, shard)
            return
        self.pending.pop(shard, None)
        shard.release(proto)
        self._finish(item)
        layer._feed_waiters(prefix)

    def _popped(self, reply, shard, proto):
        if reply is None:
            # Timed out (renewed) or unblocked because we are done.
            if self.done:
                self.pending.pop(shard, None)
                shard.release(proto)
            else:
                self._block(proto, shard)
            return
        redis_key, envelope = reply
        layer = self.layer
        key = self.names[redis_key]
        if self.done:
            # Won elsewhere or cancelled after Redis popped it: put it back
            # at the head, where it was.
            self.pending.pop(shard, None)
            proto.command("LPUSH", redis_key, envelope).addCallbacks(
                lambda _: shard.release(proto), layer._lost_message, errbackArgs=(key,))
            return
        if key.endswith("!"):
            layer._taken(shard, key, _name_of(envelope))
        item = layer._open(key, envelope)
        if not item:
            self._block(proto, shard)
            return
        self.pending.pop(shard, None)
        shard.release(proto)
        layer._stats["messages_delivered"] += 1
        self._finish(item)

    def _pop_failed(self, f, shard, proto):
        self.pending.pop(shard, None)
        if self.done:
            return
        if f.check(ConnectionError, LayerUnavailable, defer.CancelledError):
            # A connection that keeps failing while the server is up (it
            # accepts, then closes) is tried again with backoff, like one
            # that can't be made.
            self._no_connection(f, shard)
        else:
            proto.abort()
            self._finish(f)

    def _finish(self, result):
        self.done = True
        self._stop_others()
        self.layer._receives.discard(self)
        if isinstance(result, failure.Failure):
            self.deferred.errback(result)
        else:
            self.deferred.callback(result)

    def _cancel(self, d):
        self.done = True
        self._stop_others()
        self.layer._receives.discard(self)

    def _stop_others(self):
        for shard, proto in list(self.pending.items()):
            if proto is not None:
                shard.unblock(proto)
            elif shard in self.acquiring:
                # Still waiting for the server or a connection: stop waiting.
                self.acquiring.pop(shard).cancel()
