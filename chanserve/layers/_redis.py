"""
The Redis channel layer: many processes on many hosts, joined through Redis.

Every send is one Lua script (purge expired, check capacity, push, set the
key's TTL); receives block in Redis (``BLPOP``) on dedicated connections; a
process's ``!`` channels share one list per process prefix, so an interface
server blocks on one key for all its sockets and drains it in batches.
Channels and groups are spread over the ``hosts`` by a CRC32 of their name
(of the process prefix for ``!`` channels).
"""

import base64
import binascii
import hashlib
import math

import msgpack
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure
from zope.interface import implementer

from .._occasional import OccasionalWarnings
from ..exceptions import ChannelFull, LayerUnavailable
from . import _redis_scripts as scripts
from ._inmemory import CapacityRules
from ._interfaces import IChannelLayer
from ._redis_connection import ConnectionError, RedisAddress
from ._redis_shard import _COUNTERS, _HEADER, _float, _Receive, _Shard
from ._validation import (
    ReceiveNameChecker,
    check_positive_numbers,
    new_channel_name,
    process_prefix,
    validate_channel_name,
    validate_content,
    validate_group_name,
)

#: Seconds a channel's list outlives twice the expiry of its messages.
LIST_TTL_MARGIN = 60


@implementer(IChannelLayer)
class RedisChannelLayer(service.Service):
    """
    A channel layer in one or more Redis servers, shared by many processes.

    ``hosts`` lists Redis servers as ``redis://``, ``rediss://`` or
    ``unix://`` URLs or ``(host, port)`` tuples; with several, channels and
    groups are sharded over them by a stable hash of their names. Keys start
    with ``prefix``. ``symmetric_encryption_keys`` (a list of strings)
    encrypts message contents with Fernet: the first key encrypts, all
    decrypt (for key rotation).

    The layer connects when started (or on first use), reconnects with
    backoff, and while a server is down sends to it fail at once with
    ``LayerUnavailable`` while receives wait for it to come back.
    ``reactor`` connects and schedules; ``clock`` (default: ``reactor``)
    stamps messages and group memberships, so tests can move time.
    """

    _log = Logger()
    name = "channel-layer"
    extensions = ["groups", "flush", "statistics"]
    cross_process = True

    def __init__(self, hosts=None, prefix="chanserve", expiry=60, group_expiry=86400,
                 capacity=100, channel_capacity=None, symmetric_encryption_keys=None,
                 connect_timeout=5.0, command_timeout=10.0, reactor=None, clock=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self._warnings = OccasionalWarnings(self._log, self.clock)
        if hosts is None:
            hosts = ["redis://localhost:6379/0"]
        elif isinstance(hosts, (str, tuple)):
            hosts = [hosts]
        if not hosts:
            raise ValueError("hosts must list at least one Redis server")
        self.hosts = [RedisAddress.parse(h) for h in hosts]
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, not {prefix!r}")
        check_positive_numbers(expiry=expiry, group_expiry=group_expiry,
                               connect_timeout=connect_timeout, command_timeout=command_timeout)
        self.prefix = prefix
        self._p = prefix + ":"
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.capacity = CapacityRules(capacity, channel_capacity)
        self._uniform_capacity = not channel_capacity
        # Lists outlive their messages' expiry by a margin: a reader (or
        # sender) that comes back within it finds the expired messages and
        # counts them; only a list nobody touches for that long goes
        # uncounted (Redis deletes it).
        self._ttl = 2 * int(math.ceil(expiry)) + LIST_TTL_MARGIN
        self._group_ttl = int(math.ceil(group_expiry)) + 1
        self._crypter = _crypter(symmetric_encryption_keys)
        self._shards = [_Shard(self, i, address) for i, address in enumerate(self.hosts)]
        self._receives = set()
        self._buffers = {}  # process prefix -> deque of envelopes taken from Redis
        self._journal = {}  # group -> {channel: time of this process's last add}
        self._journal_adds = 0
        self._decrements = {}  # process prefix -> names read but not yet uncounted in Redis
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._stopped = False
        self._checked_receive_names = ReceiveNameChecker()
        self._plans = {}

    def __repr__(self):
        return f"<RedisChannelLayer {', '.join(map(str, self.hosts))} prefix={self.prefix!r}>"

    # -- service -------------------------------------------------------------

    def startService(self):
        """Connect to every shard (reconnecting with backoff from then on)."""
        self._stopped = False
        super().startService()
        for shard in self._shards:
            shard.start()

    def stopService(self):
        """Cancel pending receives and close every connection; fires when all are closed."""
        self._stopped = True
        super().stopService()
        for receive in list(self._receives):
            receive.deferred.cancel()
        # Let cancelled BLPOPs end (a message Redis had just handed one goes
        # back to its list) before closing the connections.
        settled = defer.DeferredList([s.settle(1.0) for s in self._shards])
        return settled.addCallback(self._close)

    def _close(self, _):
        self._warnings.flush()
        unread = sum(len(b) for b in self._buffers.values())
        if unread:
            self._stats["messages_lost"] += unread
            self._stats["messages_dropped"] += unread
            self._log.warn("{count} message(s) for this process were not read before it stopped",
                           count=unread)
        self._buffers.clear()
        return defer.DeferredList([s.stop() for s in self._shards], consumeErrors=True)

    def whenConnected(self):
        """Fire once every shard is connected (at once if they are); for start-up checks and tests."""
        self._ensure_running()
        return defer.gatherResults(
            [s.command_protocol(fail_fast=False) for s in self._shards],
            consumeErrors=True).addCallback(lambda _: None)

    def _ensure_running(self):
        if not self.running and not self._stopped:
            # Used without being started as a service (a management command,
            # a shell): connect on first use.
            self.startService()

    # -- keys, shards, envelopes ---------------------------------------------

    def _shard(self, name):
        shards = self._shards
        if len(shards) == 1:
            return shards[0]
        return shards[binascii.crc32(process_prefix(name).encode("ascii")) % len(shards)]

    def _list_key(self, key):
        return self._p + "c:" + key

    def _counts_key(self, prefix):
        return self._p + "n:" + prefix

    def _pack(self, content):
        payload = msgpack.packb(content, use_bin_type=True)
        if self._crypter is not None:
            payload = self._crypter.encrypt(payload)
        return payload

    def _envelope(self, channel, payload, expires_at):
        name = channel.encode("ascii")
        return _HEADER.pack(expires_at, len(name)) + name + payload

    def _open(self, key, envelope):
        """
        ``(channel, content)`` from an envelope taken from ``key``; ``None``
        when it has expired and ``False`` when it can't be read (both counted
        and logged).
        """
        try:
            expires_at, n = _HEADER.unpack_from(envelope)
            channel = envelope[10:10 + n].decode("ascii")
        except Exception:
            self._undecodable(key, "bad envelope")
            return False
        if expires_at <= self.clock.seconds():
            self._expired(channel, 1)
            return None
        payload = envelope[10 + n:]
        try:
            if self._crypter is not None:
                payload = self._crypter.decrypt(payload)
            content = msgpack.unpackb(payload, raw=False)
        except Exception as e:
            self._undecodable(channel, f"{e.__class__.__name__}: {e}")
            return False
        return channel, content

    def _expired(self, channel, count):
        self._stats["messages_expired"] += count
        self._stats["messages_dropped"] += count
        self._warnings.warn("expired", "{count} unread message(s) on {channel!r} expired",
                            count=count, channel=channel)

    def _undecodable(self, channel, why):
        self._stats["messages_undecodable"] += 1
        self._stats["messages_dropped"] += 1
        self._log.error("Dropped a message on {channel!r} that can't be read: {why} "
                        "(different symmetric_encryption_keys?)", channel=channel, why=why)

    def _lost_message(self, f, channel):
        self._stats["messages_lost"] += 1
        self._stats["messages_dropped"] += 1
        self._log.error("A message on {channel!r} was lost: {error}",
                        channel=channel, error=f.getErrorMessage())

    def _redis_failed(self, f, shard, what, count=1):
        """Turn a Redis failure into ``LayerUnavailable``; count messages whose fate is unknown."""
        if f.check(ChannelFull, LayerUnavailable, TypeError):
            return f
        if f.check(ConnectionError, defer.TimeoutError, defer.CancelledError):
            if count:
                self._stats["messages_lost"] += count
                self._stats["messages_dropped"] += count
                self._log.error(
                    "The connection to Redis at {address} broke during {what}: "
                    "{count} message(s) may be lost", address=shard.address, what=what, count=count)
            raise LayerUnavailable(f"Redis at {shard.address} is unavailable "
                                   f"({f.getErrorMessage() or f.type.__name__})")
        raise LayerUnavailable(f"Redis at {shard.address} failed {what}: {f.getErrorMessage()}")

    def _command(self, shard, call, what, count=0):
        """Run ``call(protocol)`` on ``shard``'s command connection, failing fast while it's down."""
        self._ensure_running()
        d = shard.command_protocol()

        def refused(f):
            if count:
                shard.refused += count
                self._stats["sends_unavailable"] += count
            return f

        def run(proto):
            if not proto.connected:
                return refused(failure.Failure(shard._unavailable()))
            return call(proto).addErrback(self._redis_failed, shard, what, count)

        return d.addCallbacks(run, refused)

    # -- sending -------------------------------------------------------------

    def send(self, channel, message):
        """Send ``message`` on ``channel``; fires when Redis holds it."""
        try:
            validate_channel_name(channel)
            payload = self._pack(validate_content(message))
        except Exception:
            return defer.fail()
        return self._send(channel, payload)

    def send_validated(self, channel, message):
        """``send`` for a message already returned by ``validate_content`` (held sends)."""
        try:
            validate_channel_name(channel)
            payload = self._pack(message)
        except Exception:
            return defer.fail()
        return self._send(channel, payload)

    def _send(self, channel, payload):
        shard = self._shard(channel)
        key = process_prefix(channel)
        keys = [self._list_key(key)]
        if key != channel:
            keys.append(self._counts_key(key))
        now = self.clock.seconds()
        envelope = self._envelope(channel, payload, now + self.expiry)
        args = [_float(now), envelope, self.capacity(channel), self._ttl, channel]
        d = self._command(shard, lambda proto: scripts.SEND(proto, keys, args),
                          f"a send to {channel!r}", count=1)
        return d.addCallback(self._sent, channel)

    def _sent(self, reply, channel):
        ok, expired = reply
        if expired:
            self._expired(process_prefix(channel), expired)
        if not ok:
            self._stats["channel_full"] += 1
            raise ChannelFull(
                f"channel {channel!r} is at its capacity of {self.capacity(channel)}")
        self._stats["messages_sent"] += 1

    def send_group(self, group, message):
        """Send ``message`` to every live member of ``group``; full members miss it (counted)."""
        try:
            validate_group_name(group)
            payload = self._pack(validate_content(message))
        except Exception:
            return defer.fail()
        return self._send_group(group, payload)

    def send_group_validated(self, group, message):
        """``send_group`` for a message already returned by ``validate_content`` (held sends)."""
        try:
            validate_group_name(group)
            payload = self._pack(message)
        except Exception:
            return defer.fail()
        return self._send_group(group, payload)

    def _send_group(self, group, payload):
        self._stats["group_sends"] += 1
        shard = self._shard(group)
        now = self.clock.seconds()
        group_key = [self._p + "g:" + group]
        cutoff = _float(now - self.group_expiry)
        if len(self._shards) == 1 and self._uniform_capacity:
            args = [_float(now), payload, _float(now + self.expiry), self._ttl, cutoff,
                    self.capacity.default, self._p]
            d = self._command(shard, lambda proto: scripts.GROUP_SEND_ALL(proto, group_key, args),
                              f"a send to group {group!r}")
            return d.addCallback(self._group_sent, group)
        d = self._command(shard, lambda proto: scripts.GROUP_MEMBERS(proto, group_key, [_float(now), cutoff]),
                          f"reading group {group!r}")
        return d.addCallback(self._push_members, group, payload, now)

    def _push_members(self, members, group, payload, now):
        by_shard = {}
        for name in members:
            name = name.decode("ascii")
            by_shard.setdefault(self._shard(name), []).append(name)
        ds = []
        for shard, names in by_shard.items():
            keys, args = [], [_float(now), payload, _float(now + self.expiry), self._ttl]
            for name in names:
                key = process_prefix(name)
                keys.append(self._list_key(key))
                specific = key != name
                if specific:
                    keys.append(self._counts_key(key))
                args += [name, self.capacity(name), "1" if specific else "0"]
            d = self._command(shard, lambda proto, keys=keys, args=args:
                              scripts.GROUP_PUSH(proto, keys, args),
                              f"a send to group {group!r}", count=len(names))
            d.addErrback(self._group_shard_failed, group, shard, len(names))
            ds.append(d)
        if not ds:
            return None
        gathered = defer.gatherResults(ds, consumeErrors=True)
        return gathered.addCallback(self._group_pushed, group)

    def _group_shard_failed(self, f, group, shard, count):
        f.trap(LayerUnavailable)
        self._log.error("Group {group!r}: {count} member(s) on Redis at {address} miss a message: "
                        "{error}", group=group, count=count, address=shard.address,
                        error=f.getErrorMessage())
        return [0, [], 0, []]

    def _group_pushed(self, replies, group):
        delivered, full, expired, stale = 0, [], 0, []
        for d, f, e, s in replies:
            delivered += d
            full += f
            expired += e
            stale += s
        if stale:
            # Members whose messages expired unread leave the group.
            key = self._p + "g:" + group
            self._command(self._shard(group), lambda proto: proto.command("ZREM", key, *stale),
                          f"pruning group {group!r}").addErrback(lambda f: None)
        self._group_sent([delivered, full, expired, stale], group)

    def _group_sent(self, reply, group):
        delivered, full, expired, stale = reply
        if stale:
            self._log.info("Group {group!r}: {count} member(s) left it, their messages expired "
                           "unread: {members}", group=group, count=len(stale),
                           members=", ".join(n.decode("ascii") for n in stale[:10])
                           + (" ..." if len(stale) > 10 else ""))
        self._stats["messages_sent"] += delivered
        if expired:
            self._expired(f"members of group {group}", expired)
        if full:
            self._stats["group_members_full"] += len(full)
            self._stats["messages_dropped"] += len(full)
            names = [n.decode("ascii") for n in full]
            self._warnings.warn(
                "group-full",
                "Group {group!r}: {count} member(s) full, they miss this message: {members}",
                group=group, count=len(names),
                members=", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))

    # -- receiving -----------------------------------------------------------

    def receive(self, channels):
        """Fire with the next ``(channel, message)`` from any of ``channels``."""
        try:
            keys = self._checked_receive_names(channels)
        except Exception:
            return defer.fail()
        self._ensure_running()
        return self._receive(keys)

    def _receive_plan(self, keys):
        """``(plan, names)`` of a receive on ``keys``: redis keys per shard, and their channels."""
        key = tuple(keys)
        cached = self._plans.get(key)
        if cached is None:
            plan, names = {}, {}
            for name in keys:
                redis_key = self._list_key(name)
                names[redis_key.encode("ascii")] = name
                plan.setdefault(self._shard(name), []).append(redis_key)
            if len(self._plans) >= 1000:
                self._plans.clear()
            cached = self._plans[key] = (plan, names)
        return cached

    def _receive(self, keys):
        item = self._from_buffers(keys)
        if item is not None:
            return defer.succeed(item)
        return _Receive(self, keys).start()

    def _from_buffers(self, keys):
        for key in keys:
            buffer = self._buffers.get(key)
            while buffer:
                item = self._open(key, buffer.popleft())
                if not buffer:
                    del self._buffers[key]
                if item:
                    self._stats["messages_delivered"] += 1
                    return item
        return None

    def _feed_waiters(self, prefix):
        """Hand messages buffered for ``prefix`` to receives already waiting on it."""
        for receive in list(self._receives):
            if not self._buffers.get(prefix):
                return
            if not receive.done and prefix in receive.keys:
                item = self._from_buffers([prefix])
                if item is not None:
                    receive._finish(item)

    def _taken(self, shard, prefix, name):
        """A BLPOP took a message of ``name`` (under ``prefix``): lower its count in Redis."""
        if name is None:
            return
        keys = [self._list_key(prefix), self._counts_key(prefix)]
        args = [_float(self.clock.seconds()), 0, name]
        self._command(shard, lambda proto: scripts.POP_BATCH(proto, keys, args),
                      "a receive").addErrback(lambda f: None)

    # -- channels and groups -------------------------------------------------

    def new_channel(self, pattern):
        """Fire with a fresh channel name for ``pattern`` (128 random bits)."""
        try:
            return defer.succeed(new_channel_name(pattern))
        except Exception:
            return defer.fail()

    def group_add(self, group, channel):
        """Add ``channel`` to ``group`` (refreshing its membership)."""
        try:
            validate_group_name(group)
            validate_channel_name(channel)
        except Exception:
            return defer.fail()
        keys = [self._p + "g:" + group]
        now = self.clock.seconds()
        args = [_float(now), channel, self._group_ttl]
        d = self._command(self._shard(group), lambda proto: scripts.GROUP_ADD(proto, keys, args),
                          f"adding to group {group!r}")
        return d.addCallback(self._added, group, channel, now)

    def _added(self, _, group, channel, now):
        # Remember it, to add it again if this shard's Redis comes back empty.
        self._journal.setdefault(group, {})[channel] = now
        self._journal_adds += 1
        if self._journal_adds % 10000 == 0:
            self._prune_journal()

    def _prune_journal(self):
        cutoff = self.clock.seconds() - self.group_expiry
        for group in list(self._journal):
            members = self._journal[group]
            for channel in [c for c, t in members.items() if t <= cutoff]:
                del members[channel]
            if not members:
                del self._journal[group]

    def _restore_groups(self, shard, proto):
        """Add again the group memberships this process made on ``shard`` (its Redis restarted)."""
        self._prune_journal()
        ds, count = [], 0
        for group, members in self._journal.items():
            if self._shard(group) is not shard or not members:
                continue
            key = self._p + "g:" + group
            args = []
            for channel, added in members.items():
                args += [_float(added), channel]
            count += len(members)
            ds.append(proto.command("ZADD", key, *args))
            ds.append(proto.command("EXPIRE", key, self._group_ttl))
        if count:
            self._log.warn("Restored {count} group membership(s) made by this process in Redis "
                           "at {address}", count=count, address=shard.address)
        return defer.gatherResults(ds, consumeErrors=True)

    def group_discard(self, group, channel):
        """Remove ``channel`` from ``group``."""
        try:
            validate_group_name(group)
            validate_channel_name(channel)
        except Exception:
            return defer.fail()
        key = self._p + "g:" + group
        members = self._journal.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._journal[group]
        return self._command(self._shard(group), lambda proto: proto.command("ZREM", key, channel),
                             f"discarding from group {group!r}").addCallback(lambda _: None)

    def group_channels(self, group):
        """Fire with the names of ``group``'s live members."""
        try:
            validate_group_name(group)
        except Exception:
            return defer.fail()
        now = self.clock.seconds()
        keys = [self._p + "g:" + group]
        args = [_float(now), _float(now - self.group_expiry)]
        d = self._command(self._shard(group), lambda proto: scripts.GROUP_MEMBERS(proto, keys, args),
                          f"reading group {group!r}")
        return d.addCallback(lambda names: [n.decode("ascii") for n in names])

    # -- housekeeping --------------------------------------------------------

    def _pattern(self, suffix):
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self._p)
        return escaped + suffix

    def flush(self):
        """Delete every key of this layer's prefix on every shard."""
        self._buffers.clear()
        self._journal.clear()
        pattern = self._pattern("*")
        return defer.gatherResults(
            [self._command(s, lambda proto: scripts.FLUSH(proto, [], [pattern]), "a flush")
             for s in self._shards], consumeErrors=True).addCallback(lambda _: None)

    def receivable(self, channel):
        """False while the Redis server holding ``channel``'s messages is down."""
        return self._shard(channel).state not in ("down", "stopped")

    def statistics(self):
        """
        Fire with this process's counters and the queue depth of every channel.

        Counters are this process's: a message sent by one process and read
        by another counts as sent in the first and delivered in the second.
        Besides the ``IChannelLayer`` counters: ``messages_lost`` (sends whose
        connection broke before Redis answered, messages taken from Redis but
        not handed out), ``messages_undecodable``, ``sends_unavailable``
        (sends refused with ``LayerUnavailable``), ``connection_losses``,
        ``reconnects``, ``redis_restarts``, ``waiting_receivers``, and
        ``shards``: ``{address: "up" | "down" | "connecting" | "stopped"}``.
        ``queue_depth`` leaves out shards that are down.
        """
        self._ensure_running()
        stats = dict(self._stats)
        stats["waiting_receivers"] = len(self._receives)
        stats["shards"] = {str(s.address): s.state for s in self._shards}
        depth = {}
        for key, buffer in self._buffers.items():
            for envelope in buffer:
                _, n = _HEADER.unpack_from(envelope)
                name = envelope[10:10 + n].decode("ascii")
                depth[name] = depth.get(name, 0) + 1
        stats["queue_depth"] = depth
        args = [self._pattern("c:*"), len(self._p) + 2, self._p + "n:"]

        def add(flat):
            for i in range(0, len(flat), 2):
                n = int(flat[i + 1])
                if n > 0:
                    name = flat[i].decode("ascii")
                    depth[name] = depth.get(name, 0) + n

        ds = []
        for shard in self._shards:
            d = self._command(shard, lambda proto: scripts.DEPTHS(proto, [], args), "statistics")
            ds.append(d.addCallbacks(add, lambda f: None))
        return defer.gatherResults(ds).addCallback(lambda _: stats)


def _crypter(keys):
    """A ``MultiFernet`` for ``symmetric_encryption_keys`` (or ``None`` without keys)."""
    if not keys:
        return None
    if isinstance(keys, (str, bytes)):
        raise ValueError("symmetric_encryption_keys must be a list of keys, not one key")
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise ValueError(
            "symmetric_encryption_keys needs the 'cryptography' package: "
            "pip install cryptography") from None
    fernets = []
    for key in keys:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not isinstance(key, bytes) or not key:
            raise ValueError("each of symmetric_encryption_keys must be a non-empty str or bytes")
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest())))
    return MultiFernet(fernets)
