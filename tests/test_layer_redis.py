"""The Redis layer against real redis-servers: conformance, atomicity, sharding, resilience."""

import itertools
import os

from twisted.internet import defer, error, reactor, task
from twisted.python import failure
from twisted.trial import unittest

from chanserve.exceptions import ChannelFull, LayerUnavailable
from chanserve.layers import RedisChannelLayer
from chanserve.layers._redis_shard import IDLE_BLOCKING
from chanserve.layers._redis_connection import ConnectionError, RedisProtocol

from .layer_conformance import LayerConformanceMixin
from .redis_server import RedisServer, shared_server

_prefixes = itertools.count()


def unique_prefix():
    return f"t{os.getpid()}x{next(_prefixes)}"


class RedisLayerCase(unittest.TestCase):
    """Builds Redis layers on the shared test server and tears them down cleanly."""

    def layer(self, hosts=None, clock=None, **config):
        if hosts is None:
            hosts = [shared_server().url]
        config.setdefault("prefix", unique_prefix())
        layer = RedisChannelLayer(hosts=hosts, reactor=reactor, clock=clock, **config)
        layer.startService()
        self.addCleanup(self._stop, layer)
        return layer

    def private_servers(self, count=1):
        """
        Fresh redis-servers for this test alone: for assertions on a
        server-wide figure (blocked clients), which other modules' clients
        of the shared servers would disturb.
        """
        servers = [RedisServer() for _ in range(count)]
        for server in servers:
            self.addCleanup(server.stop)
        return servers

    async def _stop(self, layer):
        if all(s.state == "up" for s in layer._shards):
            await layer.flush()
        await layer.stopService()


class RedisLayerConformanceTests(LayerConformanceMixin, RedisLayerCase):
    """RedisChannelLayer passes the layer conformance suite against a real redis-server."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)

    def make_layer(self, **config):
        return self.layer(clock=self.clock, **config)

    def advance(self, seconds):
        self.clock.advance(seconds)


def round_trips(server):
    """Scripts and BLPOPs the server has run so far: the layer's round trips (INFO doesn't count)."""
    info = server.command("INFO", "commandstats").decode()
    total = 0
    for line in info.splitlines():
        name, _, rest = line.partition(":")
        if name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_blpop"):
            total += int(rest.split(",")[0].split("=")[1])
    return total


def blocked_clients(server):
    info = server.command("INFO", "clients").decode()
    for line in info.splitlines():
        if line.startswith("blocked_clients:"):
            return int(line.split(":")[1])
    raise AssertionError("no blocked_clients in INFO")


async def until(predicate, clock=reactor, step=0.01, limit=10.0):
    """Wait (on the reactor, not sleeping) until ``predicate()`` is true."""
    waited = 0.0
    while not predicate():
        if waited >= limit:
            raise AssertionError(f"condition not met within {limit}s")
        await task.deferLater(clock, step, lambda: None)
        waited += step


class RedisLayerTests(RedisLayerCase):
    """What the Redis layer does beyond the conformance suite, on one real redis-server."""

    def setUp(self):
        self.server = shared_server()

    async def test_between_processes(self):
        """Two layers with their own connections (two processes) share channels, `!` channels and groups."""
        prefix = unique_prefix()
        a = self.layer(prefix=prefix)
        b = self.layer(prefix=prefix)
        await a.send("proc.work", {"n": 1})
        self.assertEqual(await b.receive(["proc.work"]), ("proc.work", {"n": 1}))
        reply = await b.new_channel("iface.abc!")
        d = b.receive(["iface.abc!"])
        await a.group_add("room", reply)
        await a.send_group("room", {"text": "hi", "raw": b"\x00"})
        self.assertEqual(await d, (reply, {"text": "hi", "raw": b"\x00"}))
        self.assertEqual(await b.group_channels("room"), [reply])

    async def test_held_sends(self):
        """Sends held by a consumer go out in order when flushed (the already-validated path)."""
        from chanserve.channel import Channel, Group, holding_sends
        layer = self.layer()
        await layer.group_add("held", "held.member")
        with holding_sends() as held:
            Channel("held.chan", channel_layer=layer).send({"n": 1})
            Group("held", channel_layer=layer).send({"g": b"1"})
            Channel("held.chan", channel_layer=layer).send({"n": 2})
        self.assertEqual(len(held), 3)
        self.assertEqual(await held.flush(), [])
        got = [await layer.receive(["held.chan"]) for _ in range(2)]
        self.assertEqual(got, [("held.chan", {"n": 1}), ("held.chan", {"n": 2})])
        self.assertEqual(await layer.receive(["held.member"]), ("held.member", {"g": b"1"}))

    async def test_capacity_is_atomic(self):
        """Concurrent sends from two processes never take a channel over capacity: exactly `capacity` go in."""
        prefix = unique_prefix()
        a = self.layer(prefix=prefix, capacity=50)
        b = self.layer(prefix=prefix, capacity=50)
        ds = [layer.send("atomic", {"i": i}) for i in range(60) for layer in (a, b)]
        results = await defer.DeferredList(ds, consumeErrors=True)
        ok = [r for success, r in results if success]
        full = [r for success, r in results if not success and r.check(ChannelFull)]
        self.assertEqual((len(ok), len(full)), (50, 70))
        self.assertEqual(self.server.command("LLEN", f"{prefix}:c:atomic"), 50)
        stats_a, stats_b = await a.statistics(), await b.statistics()
        self.assertEqual(stats_a["channel_full"] + stats_b["channel_full"], 70)
        self.assertEqual(stats_a["queue_depth"], {"atomic": 50})

    async def test_process_channels_share_one_key(self):
        """Messages to 50 channels of one process prefix wait in one Redis list (plus one count hash)."""
        layer = self.layer()
        for i in range(50):
            await layer.send(f"iface.p!{i}", {"i": i})
        keys = sorted(k.decode() for k in self.server.command("KEYS", f"{layer.prefix}:*"))
        self.assertEqual(keys, [f"{layer.prefix}:c:iface.p!", f"{layer.prefix}:n:iface.p!"])
        stats = await layer.statistics()
        self.assertEqual(stats["queue_depth"], {f"iface.p!{i}": 1 for i in range(50)})

    async def test_process_channels_read_in_batches(self):
        """A burst on a process prefix is read in a few round trips, in order, and frees its counts."""
        prefix = unique_prefix()
        sender = self.layer(prefix=prefix)
        reader = self.layer(prefix=prefix, capacity=300)
        await reader.whenConnected()
        for i in range(250):
            await sender.send(f"iface.q!{i % 7}", {"i": i})
        before = round_trips(self.server)
        got = [(await reader.receive(["iface.q!"])) for _ in range(250)]
        used = round_trips(self.server) - before
        self.assertEqual([m["i"] for _, m in got], list(range(250)))
        self.assertEqual([c for c, _ in got], [f"iface.q!{i % 7}" for i in range(250)])
        self.assertLessEqual(used, 12)
        # Counts are given back as messages are read (the last one's with
        # the next receive's batch).
        d = reader.receive(["iface.q!"])
        await sender.send("iface.q!0", {"last": True})
        await d
        blocked = blocked_clients(self.server)
        d = reader.receive(["iface.q!"])
        await until(lambda: blocked_clients(self.server) > blocked)
        self.assertEqual(self.server.command("HGETALL", f"{prefix}:n:iface.q!"), [])
        d.cancel()
        d.addErrback(lambda f: f.trap(defer.CancelledError))

    async def test_concurrent_receives_on_one_prefix(self):
        """Several receives waiting on one process prefix all get messages from one burst."""
        prefix = unique_prefix()
        reader = self.layer(prefix=prefix)
        sender = self.layer(prefix=prefix)
        await reader.whenConnected()
        before = blocked_clients(self.server)
        ds = [reader.receive(["iface.c!"]) for _ in range(3)]
        await until(lambda: blocked_clients(self.server) == before + 3)
        for i in range(3):
            await sender.send(f"iface.c!{i}", {"i": i})
        got = sorted([(await d)[1]["i"] for d in ds])
        self.assertEqual(got, [0, 1, 2])

    async def test_group_send_round_trips(self):
        """A group send to 600 members (half process-specific) is one command in Redis, not 600."""
        layer = self.layer(capacity=5)
        for i in range(300):
            await layer.group_add("big", f"worker.chan{i}")
            await layer.group_add("big", f"iface.r!{i}")
        before = round_trips(self.server)
        await layer.send_group("big", {"text": "to all"})
        self.assertEqual(round_trips(self.server) - before, 1)
        stats = await layer.statistics()
        self.assertEqual(stats["messages_sent"], 600)
        self.assertEqual(len(stats["queue_depth"]), 600)

    async def test_group_send_drops_only_full_members(self):
        """In a 300-member group, the 3 full members miss the message (counted); 297 get it."""
        prefix = unique_prefix()
        layer = self.layer(prefix=prefix, capacity=1)
        reader = self.layer(prefix=prefix)
        for i in range(300):
            await layer.group_add("crowd", f"member{i}")
        for i in (5, 50, 250):
            await layer.send(f"member{i}", {"before": True})
        await layer.send_group("crowd", {"text": "group"})
        stats = await layer.statistics()
        self.assertEqual(stats["group_members_full"], 3)
        self.assertEqual(stats["messages_dropped"], 3)
        for i in range(300):
            expected = {"before": True} if i in (5, 50, 250) else {"text": "group"}
            self.assertEqual(await reader.receive([f"member{i}"]), (f"member{i}", expected))

    async def test_group_capacity_globs(self):
        """Group sends apply channel_capacity globs to each member."""
        layer = self.layer(capacity=1, channel_capacity={"roomy*": 3})
        await layer.group_add("g", "roomy.a")
        await layer.group_add("g", "tight.a")
        for _ in range(3):
            await layer.send_group("g", {"x": 1})
        stats = await layer.statistics()
        self.assertEqual(stats["queue_depth"], {"roomy.a": 3, "tight.a": 1})
        self.assertEqual(stats["group_members_full"], 2)

    async def test_expired_message_dropped_on_receive(self):
        """A message that expired while queued is dropped (and counted) by the receiver, which waits on."""
        clock = task.Clock()
        clock.advance(1000)
        prefix = unique_prefix()
        sender = self.layer(prefix=prefix, clock=clock, expiry=5)
        reader = self.layer(prefix=prefix, clock=clock, expiry=5)
        await sender.send("stale", {"old": True})
        await sender.send("stale.p!x", {"old": True})
        clock.advance(6)
        blocked = blocked_clients(self.server)
        d = reader.receive(["stale"])
        p = reader.receive(["stale.p!"])
        # Both take their expired message, drop it and block again.
        await until(lambda: blocked_clients(self.server) == blocked + 2)
        await sender.send("stale", {"old": False})
        await sender.send("stale.p!y", {"old": False})
        self.assertEqual(await d, ("stale", {"old": False}))
        self.assertEqual(await p, ("stale.p!y", {"old": False}))
        stats = await reader.statistics()
        self.assertEqual(stats["messages_expired"], 2)
        self.assertEqual(stats["messages_dropped"], 2)

    async def test_lists_outlive_expiry(self):
        """
        A channel's list (and a process prefix's counts) lives 2 x expiry +
        60 s after its last send, well past its messages' expiry, so a
        reader that comes back late still finds expired messages and counts
        them instead of Redis deleting them unseen.
        """
        layer = self.layer(expiry=2)
        await layer.send("late.reader", {})
        await layer.send("late.p!x", {})
        for key in ("c:late.reader", "c:late.p!", "n:late.p!"):
            ttl = self.server.command("TTL", f"{layer.prefix}:{key}")
            self.assertTrue(60 < ttl <= 64, (key, ttl))

    async def test_unread_members_leave_group(self):
        """Members whose group messages expire unread leave the group at its next send."""
        clock = task.Clock()
        clock.advance(1000)
        layer = self.layer(clock=clock, expiry=10)
        for name in ("reader", "gone", "iface.a!gone", "iface.b!reads"):
            await layer.group_add("room", name)
        await layer.send_group("room", {"n": 1})
        await layer.receive(["reader"])
        await layer.receive(["iface.b!"])
        clock.advance(11)
        await layer.send_group("room", {"n": 2})
        self.assertEqual(sorted(await layer.group_channels("room")), ["iface.b!reads", "reader"])
        stats = await layer.statistics()
        self.assertEqual(stats["messages_expired"], 2)

    async def test_encryption_and_rotation(self):
        """Contents are Fernet-encrypted in Redis; the first key encrypts, every key decrypts."""
        prefix = unique_prefix()
        old = self.layer(prefix=prefix, symmetric_encryption_keys=["old-secret"])
        rotated = self.layer(prefix=prefix, symmetric_encryption_keys=["new-secret", "old-secret"])
        stranger = self.layer(prefix=prefix, symmetric_encryption_keys=["other"])
        await old.send("secret", {"text": "plaintext-marker"})
        raw = self.server.command("LRANGE", f"{prefix}:c:secret", 0, -1)
        self.assertEqual(len(raw), 1)
        self.assertNotIn(b"plaintext-marker", raw[0])
        self.assertEqual(await rotated.receive(["secret"]), ("secret", {"text": "plaintext-marker"}))
        await rotated.send("secret", {"text": "new"})
        await stranger.send("secret", {"text": "unreadable"})
        await old.send("secret", {"text": "old again"})
        self.assertEqual(await rotated.receive(["secret"]), ("secret", {"text": "new"}))
        self.assertEqual(await rotated.receive(["secret"]), ("secret", {"text": "old again"}))
        stats = await rotated.statistics()
        self.assertEqual(stats["messages_undecodable"], 1)
        self.assertEqual(stats["messages_dropped"], 1)

    async def test_unix_socket(self):
        """A unix:// host works like a TCP one."""
        layer = self.layer(hosts=[self.server.unix_url + "?db=1"])
        await layer.send("over.unix", {"ok": True})
        self.assertEqual(await layer.receive(["over.unix"]), ("over.unix", {"ok": True}))
        self.assertEqual(self.server.command("SELECT", 1), "OK")

    async def test_tls(self):
        """A rediss:// host talks TLS, verifying the server's certificate against ssl_ca_certs."""
        server = RedisServer(tls=True)
        self.addCleanup(server.stop)
        layer = self.layer(hosts=[server.tls_url])
        await layer.send("over.tls", {"secret": b"\x00"})
        self.assertEqual(await layer.receive(["over.tls"]), ("over.tls", {"secret": b"\x00"}))
        self.assertEqual(server.command("LLEN", f"{layer.prefix}:c:over.tls"), 0)
        # A certificate that doesn't match the trusted one is refused.
        other = RedisServer(tls=True, start=False)
        self.addCleanup(other.stop)
        untrusting = self.layer(hosts=[f"rediss://localhost:{server.tls_port}/0?ssl_ca_certs={other.ca_file}"])
        with self.assertRaises(LayerUnavailable):
            await untrusting.send("over.tls", {"secret": b"no"})

    async def test_connects_on_first_use(self):
        """A layer nobody started (a management command, a shell) connects when first used."""
        layer = RedisChannelLayer(hosts=[("127.0.0.1", self.server.port)], prefix=unique_prefix(),
                                  reactor=reactor)
        self.addCleanup(self._stop, layer)
        self.assertFalse(layer.running)
        await layer.send("lazy", {"a": 1})
        self.assertTrue(layer.running)
        self.assertEqual(await layer.receive(["lazy"]), ("lazy", {"a": 1}))

    async def test_stopped_layer_stays_stopped(self):
        """After stopService the layer refuses work with LayerUnavailable instead of reconnecting."""
        layer = self.layer()
        await layer.send("before.stop", {"a": 1})
        await layer.stopService()
        with self.assertRaises(LayerUnavailable):
            await layer.send("after.stop", {"a": 2})
        self.assertFalse(layer.running)
        self.assertEqual(self.server.command("LLEN", f"{layer.prefix}:c:after.stop"), 0)

    async def test_cancelled_receives_free_their_connections(self):
        """Receives cancelled while blocked end their BLPOP: connections are reused, none pile up."""
        (self.server,) = self.private_servers()
        layer = self.layer(hosts=[self.server.url])
        await layer.whenConnected()
        for i in range(30):
            d = layer.receive([f"c{i}", "shared"])
            await until(lambda: blocked_clients(self.server) >= 1)
            d.cancel()
            with self.assertRaises(defer.CancelledError):
                await d
        shard = layer._shards[0]
        # Every BLPOP ends; at most IDLE_BLOCKING idle connections are kept.
        await until(lambda: blocked_clients(self.server) == 0 and len(shard.blocking) <= IDLE_BLOCKING
                    and set(shard.blocking) == set(shard.idle))
        await layer.send("shared", {"still": "here"})
        self.assertEqual(await layer.receive(["shared"]), ("shared", {"still": "here"}))

    async def test_cancel_after_redis_popped(self):
        """A receive cancelled after Redis handed it a message puts the message back at the head."""
        (self.server,) = self.private_servers()
        prefix = unique_prefix()
        reader = self.layer(hosts=[self.server.url], prefix=prefix)
        sender = self.layer(hosts=[self.server.url], prefix=prefix)
        await sender.send("popped", {"n": 1})
        await sender.send("popped.other", {"n": 0})
        d = reader.receive(["popped.wait"])
        await until(lambda: blocked_clients(self.server) >= 1)
        (proto,) = [p for p in reader._shards[0].blocking if p.replyQueue.waiting]
        proto.transport.stopReading()
        # Move the message to the channel the blocked receive waits on: Redis
        # pops it for the BLPOP and writes the reply we aren't reading yet.
        await sender.send("popped.wait", {"n": 2})
        await until(lambda: blocked_clients(self.server) == 0)
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            await d
        proto.transport.startReading()
        await sender.send("popped.wait", {"n": 3})
        got = [await reader.receive(["popped.wait"]) for _ in range(2)]
        self.assertEqual(got, [("popped.wait", {"n": 2}), ("popped.wait", {"n": 3})])

    async def test_stop_gives_back_popped_message(self):
        """Stopping a layer while Redis hands its BLPOP a message puts the message back for others."""
        prefix = unique_prefix()
        reader = self.layer(prefix=prefix)
        sender = self.layer(prefix=prefix)
        await reader.whenConnected()
        before = blocked_clients(self.server)
        d = reader.receive(["stopping"])
        await until(lambda: blocked_clients(self.server) > before)
        (proto,) = [p for p in reader._shards[0].blocking if p.replyQueue.waiting]
        proto.transport.stopReading()
        await sender.send("stopping", {"work": 1})
        await until(lambda: blocked_clients(self.server) == before)
        stopped = reader.stopService()
        proto.transport.startReading()
        await stopped
        with self.assertRaises(defer.CancelledError):
            await d
        self.assertEqual(await sender.receive(["stopping"]), ("stopping", {"work": 1}))

    async def test_statistics_shards_and_waiters(self):
        """statistics() shows each shard's state and the receives waiting."""
        layer = self.layer()
        await layer.whenConnected()
        d = layer.receive(["waiting.one"])
        stats = await layer.statistics()
        self.assertEqual(stats["shards"], {f"redis://127.0.0.1:{self.server.port}/0": "up"})
        self.assertEqual(stats["waiting_receivers"], 1)
        d.cancel()
        d.addErrback(lambda f: f.trap(defer.CancelledError))

    def test_bad_config(self):
        """Bad hosts and numbers are ValueErrors naming the problem."""
        for hosts in (["http://localhost"], ["redis://"], [("localhost",)], [42], [],
                      ["redis://localhost:notaport"], ["unix://"]):
            with self.assertRaises(ValueError, msg=repr(hosts)):
                RedisChannelLayer(hosts=hosts, reactor=reactor)
        with self.assertRaises(ValueError):
            RedisChannelLayer(expiry=0, reactor=reactor)
        with self.assertRaises(ValueError):
            RedisChannelLayer(capacity=0, reactor=reactor)
        with self.assertRaises(ValueError):
            RedisChannelLayer(symmetric_encryption_keys="one-key", reactor=reactor)
        with self.assertRaises(TypeError):
            RedisChannelLayer(unknown_option=1, reactor=reactor)

    def test_url_forms(self):
        """redis://, rediss://, unix:// URLs and (host, port) tuples are understood."""
        layer = RedisChannelLayer(hosts=[
            "redis://:pw@example.com:6380/2", "rediss://user:pw@example.com",
            "unix:///run/redis.sock?db=3", ("10.0.0.1", 7000)], reactor=reactor)
        a, b, c, d = layer.hosts
        self.assertEqual((a.kind, a.host, a.port, a.db, a.password), ("tcp", "example.com", 6380, 2, "pw"))
        self.assertEqual((b.kind, b.port, b.username, b.password), ("tls", 6379, "user", "pw"))
        self.assertEqual((c.kind, c.path, c.db), ("unix", "/run/redis.sock", 3))
        self.assertEqual((d.kind, d.host, d.port), ("tcp", "10.0.0.1", 7000))

    def test_settings_errors_name_the_setting(self):
        """A bad Redis CONFIG in CHANNEL_LAYERS is an ImproperlyConfigured naming the setting."""
        from django.core.exceptions import ImproperlyConfigured
        from django.test import override_settings

        from chanserve.layers import build_channel_layer
        bad = {"default": {"BACKEND": "asgi_redis.RedisChannelLayer",
                           "CONFIG": {"hosts": ["mysql://nope"]}, "ROUTING": "x.y"}}
        with override_settings(CHANNEL_LAYERS=bad):
            with self.assertRaises(ImproperlyConfigured) as e:
                build_channel_layer("default", reactor)
        self.assertIn("CONFIG", str(e.exception))
        self.assertIn("mysql://nope", str(e.exception))


class RedisShardingTests(RedisLayerCase):
    """Channels and groups sharded over two real redis-servers by a stable hash of their names."""

    def setUp(self):
        self.servers = [shared_server(0), shared_server(1)]
        self.hosts = [s.url for s in self.servers]

    def keys_on(self, server, layer):
        return {k.decode()[len(layer.prefix) + 1:] for k in server.command("KEYS", f"{layer.prefix}:*")}

    async def test_channels_spread_over_shards(self):
        """Channels land on both servers, each on exactly one, and one receive spans both."""
        prefix = unique_prefix()
        a = self.layer(hosts=self.hosts, prefix=prefix)
        b = self.layer(hosts=self.hosts, prefix=prefix)
        names = [f"spread.{i}" for i in range(40)]
        for i, name in enumerate(names):
            await a.send(name, {"i": i})
        first, second = (self.keys_on(s, a) for s in self.servers)
        self.assertTrue(first and second)
        self.assertEqual(first & second, set())
        self.assertEqual(first | second, {f"c:{n}" for n in names})
        got = {}
        for _ in names:
            channel, message = await b.receive(names)
            got[channel] = message["i"]
        self.assertEqual(got, {n: i for i, n in enumerate(names)})

    async def test_receivable_follows_its_shard(self):
        """
        With one server of two down, ``receivable`` is False for exactly the
        channels that live there (an interface server whose replies would
        land there refuses requests), True for the others.
        """
        servers = self.private_servers(2)
        layer = self.layer(hosts=[s.url for s in servers], connect_timeout=1.0)
        await layer.send("warm.up", {})
        names = [f"iface.{i}!" for i in range(20)]
        dead = servers[1]
        on_dead = [n for n in names if layer._shard(n).address.port == dead.port]
        self.assertTrue(on_dead and len(on_dead) < len(names))
        self.assertTrue(all(layer.receivable(n) for n in names))
        dead.kill()
        for name in on_dead:
            with self.assertRaises(LayerUnavailable):
                await layer.send(name + "x", {})
        self.assertEqual([n for n in names if not layer.receivable(n)], on_dead)

    async def test_process_prefix_on_one_shard(self):
        """All channels of one process prefix live on one server, whatever follows the `!`."""
        layer = self.layer(hosts=self.hosts)
        for i in range(30):
            await layer.send(f"iface.one!{i}", {"i": i})
        holders = [s for s in self.servers if self.keys_on(s, layer)]
        self.assertEqual(len(holders), 1)
        got = [(await layer.receive(["iface.one!"]))[1]["i"] for _ in range(30)]
        self.assertEqual(got, list(range(30)))

    async def test_same_shard_in_every_process(self):
        """Another process (a new layer) maps every channel and group to the same server."""
        a = self.layer(hosts=self.hosts)
        b = self.layer(hosts=list(reversed(self.hosts)))
        c = self.layer(hosts=self.hosts)
        for name in ["x", "http.request", "iface.a!b", "group.name", "y" * 90]:
            self.assertEqual(str(a._shard(name).address), str(c._shard(name).address))
            self.assertIsNot(a._shard(name), c._shard(name))
        self.assertTrue(any(str(a._shard(n).address) != str(b._shard(n).address)
                            for n in (f"n{i}" for i in range(20))))

    async def test_group_across_shards(self):
        """A group's members on both servers all get a group send, in O(1) scripts per server."""
        prefix = unique_prefix()
        layer = self.layer(hosts=self.hosts, prefix=prefix)
        reader = self.layer(hosts=self.hosts, prefix=prefix)
        members = [f"member.{i}" for i in range(100)] + [f"iface.{i}!x" for i in range(20)]
        for name in members:
            await layer.group_add("wide", name)
        before = [round_trips(s) for s in self.servers]
        await layer.send_group("wide", {"text": "everyone"})
        after = [round_trips(s) for s in self.servers]
        self.assertEqual(sum(after) - sum(before), 3)  # members read + one push per server
        for name in members:
            key = name if "!" not in name else name[:name.index("!") + 1]
            self.assertEqual(await reader.receive([key]), (name, {"text": "everyone"}))
        stats = await layer.statistics()
        self.assertEqual(stats["messages_sent"], 120)

    async def test_unread_members_leave_group_across_shards(self):
        """With members on both servers, members whose messages expired unread leave the group."""
        clock = task.Clock()
        clock.advance(1000)
        layer = self.layer(hosts=self.hosts, clock=clock, expiry=10)
        names = [f"member.{i}" for i in range(10)]
        for name in names:
            await layer.group_add("shards", name)
        await layer.send_group("shards", {"n": 1})
        readers = names[::2]
        for name in readers:
            await layer.receive([name])
        clock.advance(11)
        await layer.send_group("shards", {"n": 2})
        await until(lambda: len(self.servers[0].command("ZRANGE", f"{layer.prefix}:g:shards", 0, -1)
                                + self.servers[1].command("ZRANGE", f"{layer.prefix}:g:shards", 0, -1))
                    == len(readers))
        self.assertEqual(sorted(await layer.group_channels("shards")), sorted(readers))

    async def test_cancel_receive_spanning_shards(self):
        """A receive over both servers takes one message; the other server's BLPOP ends, nothing is lost."""
        self.servers = self.private_servers(2)
        self.hosts = [s.url for s in self.servers]
        prefix = unique_prefix()
        layer = self.layer(hosts=self.hosts, prefix=prefix)
        sender = self.layer(hosts=self.hosts, prefix=prefix)
        names = [f"both.{i}" for i in range(10)]
        by_server = {}
        for name in names:
            by_server.setdefault(layer._shard(name).index, []).append(name)
        self.assertEqual(len(by_server), 2)
        one, other = by_server[0][0], by_server[1][0]
        for _ in range(20):
            d = layer.receive([one, other])
            await sender.send(one, {"to": one})
            self.assertEqual(await d, (one, {"to": one}))
        await sender.send(other, {"to": other})
        self.assertEqual(await layer.receive([one, other]), (other, {"to": other}))
        await until(lambda: sum(blocked_clients(s) for s in self.servers) == 0)


class RedisResilienceTests(RedisLayerCase):
    """A real redis-server killed, frozen and restarted under the layer."""

    def setUp(self):
        self.server = RedisServer()
        self.addCleanup(self.server.stop)

    async def test_send_fails_fast_and_receive_resumes(self):
        """While Redis is down sends fail at once with LayerUnavailable; a waiting receive resumes after."""
        prefix = unique_prefix()
        sender = self.layer(hosts=[self.server.url], prefix=prefix)
        reader = self.layer(hosts=[self.server.url], prefix=prefix)
        await sender.whenConnected()
        await reader.whenConnected()
        d = reader.receive(["resume.me"])
        self.server.kill()
        await until(lambda: sender._shards[0].state == "down")
        started = reactor.seconds()
        with self.assertRaises(LayerUnavailable):
            await sender.send("resume.me", {"lost": True})
        with self.assertRaises(LayerUnavailable):
            await sender.send_group("any", {"lost": True})
        self.assertLess(reactor.seconds() - started, 0.1)
        self.assertFalse(d.called)
        self.server.start()
        await sender.whenConnected()
        await sender.send("resume.me", {"after": "restart"})
        self.assertEqual(await d, ("resume.me", {"after": "restart"}))
        stats = await sender.statistics()
        self.assertEqual(stats["sends_unavailable"], 1)
        self.assertEqual(stats["connection_losses"], 1)
        self.assertEqual(stats["reconnects"], 1)
        self.assertEqual(stats["redis_restarts"], 1)
        self.assertEqual(stats["shards"], {self.server.url.replace("/0", "/0"): "up"})

    async def test_server_closes_connections(self):
        """When Redis closes the layer's connections (an idle timeout, CLIENT KILL), sends wait for the reconnection."""
        prefix = unique_prefix()
        layer = self.layer(hosts=[self.server.url], prefix=prefix)
        reader = self.layer(hosts=[self.server.url], prefix=prefix)
        await layer.whenConnected()
        d = reader.receive(["closed.by.server"])
        await until(lambda: blocked_clients(self.server) == 1)
        self.server.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await until(lambda: layer._shards[0].state != "up")
        await layer.send("closed.by.server", {"still": "works"})
        self.assertEqual(await d, ("closed.by.server", {"still": "works"}))
        stats = await layer.statistics()
        self.assertEqual((stats["connection_losses"], stats["sends_unavailable"]), (1, 0))
        self.assertEqual(stats["redis_restarts"], 0)

    async def test_receives_cancelled_during_outage(self):
        """Receives cancelled while Redis is down leave nothing behind: no connections made on recovery."""
        layer = self.layer(hosts=[self.server.url])
        await layer.whenConnected()
        self.server.kill()
        await until(lambda: layer._shards[0].state == "down")
        for i in range(20):
            d = layer.receive([f"outage.{i}"])
            d.cancel()
            self.failureResultOf(d, defer.CancelledError)
        self.server.start()
        await layer.whenConnected()
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(layer._shards[0].blocking, set())
        self.assertEqual((await layer.statistics())["waiting_receivers"], 0)

    async def test_restart_under_load(self):
        """Kill -9 and restart Redis mid-stream: no crash, FIFO kept, every send after recovery arrives."""
        prefix = unique_prefix()
        sender = self.layer(hosts=[self.server.url], prefix=prefix, capacity=1000)
        reader = self.layer(hosts=[self.server.url], prefix=prefix, capacity=1000)
        sent, refused, received = [], [], []
        running = [True]

        async def send_loop():
            i = 0
            while running[0]:
                try:
                    await sender.send("load", {"i": i})
                    sent.append(i)
                except LayerUnavailable:
                    refused.append(i)
                    await task.deferLater(reactor, 0.005, lambda: None)
                except ChannelFull:
                    # The reader lags (it reconnects too): back off, send again.
                    await task.deferLater(reactor, 0.005, lambda: None)
                    continue
                i += 1

        async def receive_loop():
            while True:
                _, message = await reader.receive(["load"])
                if message["i"] < 0:
                    return
                received.append(message["i"])

        loops = [defer.Deferred.fromCoroutine(send_loop()),
                 defer.Deferred.fromCoroutine(receive_loop())]
        await until(lambda: len(received) >= 300)
        self.server.kill()
        await until(lambda: len(refused) >= 5)
        self.server.start()
        await until(lambda: refused and len([i for i in received if i > refused[-1]]) >= 300)
        running[0] = False
        await loops[0]
        await sender.send("load", {"i": -1})
        await loops[1]
        self.assertEqual(received, sorted(set(received)))
        self.assertEqual(set(received) - set(sent), set())
        after = [i for i in sent if i > refused[-1]]
        self.assertEqual(set(after) - set(received), set())
        stats = await sender.statistics()
        self.assertEqual(stats["sends_unavailable"] + stats["messages_lost"], len(refused))
        self.assertEqual(stats["redis_restarts"], 1)
        self.assertGreaterEqual((await reader.statistics())["reconnects"], 1)

    async def test_group_memberships_restored(self):
        """After Redis comes back empty, each process adds again the memberships it made (not discarded ones)."""
        prefix = unique_prefix()
        a = self.layer(hosts=[self.server.url], prefix=prefix)
        b = self.layer(hosts=[self.server.url], prefix=prefix)
        await a.group_add("kept", "x")
        await a.group_add("kept", "y")
        await a.group_discard("kept", "y")
        await b.group_add("kept", "iface.b!z")
        await b.whenConnected()
        self.server.kill()
        self.server.start()
        await until(lambda: a._stats["redis_restarts"] and b._stats["redis_restarts"])
        self.assertEqual(sorted(await a.group_channels("kept")), ["iface.b!z", "x"])
        await a.send_group("kept", {"after": "restart"})
        self.assertEqual(await b.receive(["iface.b!"]), ("iface.b!z", {"after": "restart"}))

    async def test_frozen_server(self):
        """A server that stops answering (a network cut) makes sends fail after command_timeout, not hang."""
        layer = self.layer(hosts=[self.server.url], command_timeout=0.3)
        await layer.whenConnected()
        self.server.pause()
        try:
            started = reactor.seconds()
            with self.assertRaises(LayerUnavailable):
                await layer.send("frozen", {"a": 1})
            self.assertLess(reactor.seconds() - started, 2)
            with self.assertRaises(LayerUnavailable):
                await layer.send("frozen", {"a": 2})
        finally:
            self.server.resume()
        await layer.whenConnected()
        await layer.send("frozen", {"a": 3})
        # The first send's fate was unknown (counted as maybe lost): Redis may
        # still run it once it reads its socket again. The refused one never
        # reached Redis.
        got = []
        while not got or got[-1] != 3:
            got.append((await layer.receive(["frozen"]))[1]["a"])
        self.assertIn(got, ([3], [1, 3]))
        stats = await layer.statistics()
        self.assertEqual((stats["messages_lost"], stats["sends_unavailable"]), (1, 1))

    async def test_password(self):
        """A password in the URL authenticates; a wrong one makes sends fail with LayerUnavailable."""
        self.server.kill()
        self.server.args = ["--requirepass", "s3cret"]
        self.server.start()
        good = self.layer(hosts=[f"redis://:s3cret@127.0.0.1:{self.server.port}/2"])
        await good.send("authed", {"ok": True})
        self.assertEqual(self.server.command("SELECT", 2, password="s3cret"), "OK")
        self.assertEqual(await good.receive(["authed"]), ("authed", {"ok": True}))
        bad = self.layer(hosts=[f"redis://:wrong@127.0.0.1:{self.server.port}/0"])
        with self.assertRaises(LayerUnavailable):
            await bad.send("never", {"ok": False})

    async def test_redis_not_there_at_start(self):
        """With no Redis yet, sends fail fast; the layer connects once Redis starts."""
        self.server.kill()
        layer = self.layer(hosts=[self.server.url])
        with self.assertRaises(LayerUnavailable):
            await layer.send("early", {"a": 1})
        self.server.start()
        await layer.whenConnected()
        await layer.send("early", {"a": 2})
        self.assertEqual(await layer.receive(["early"]), ("early", {"a": 2}))


class RedisWatchdogTests(unittest.SynchronousTestCase):
    """The per-connection reply watchdog, driven by a task.Clock over a StringTransport."""

    def setUp(self):
        from twisted.internet.testing import StringTransport
        self.clock = task.Clock()
        self.proto = RedisProtocol()
        self.proto.clock = self.clock
        self.proto.timeout = 10
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.lost = []
        self.proto.on_lost = lambda p, why: self.lost.append(why)

    def test_slow_reply_drops_connection(self):
        """A reply that doesn't come within the timeout aborts the connection; its command fails."""
        d = self.proto.command("PING")
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(failure.Failure(error.ConnectionAborted()))
        self.failureResultOf(d, ConnectionError)
        self.assertEqual(len(self.lost), 1)

    def test_commands_behind_a_blpop_wait_for_it(self):
        """A command pipelined behind a long BLPOP is not timed out before the BLPOP may answer."""
        blpop = self.proto.command("BLPOP", "k", 20, timeout=30)
        batch = self.proto.command("EVALSHA", "x", 0)
        self.clock.advance(25)
        self.proto.dataReceived(b"*-1\r\n")
        self.assertIsNone(self.successResultOf(blpop))
        self.clock.advance(0)
        self.assertFalse(self.transport.disconnecting)
        self.proto.dataReceived(b"*0\r\n")
        self.assertEqual(self.successResultOf(batch), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_replies_parsed_across_reads(self):
        """Replies split anywhere across reads are parsed whole: bulk, nested arrays, errors, ints."""
        ds = [self.proto.command("X") for _ in range(4)]
        data = b"$5\r\nhel\x00o\r\n*2\r\n*1\r\n:7\r\n$-1\r\n-ERR bad thing\r\n+OK\r\n"
        for i in range(len(data)):
            self.proto.dataReceived(data[i:i + 1])
        self.assertEqual(self.successResultOf(ds[0]), b"hel\x00o")
        self.assertEqual(self.successResultOf(ds[1]), [[7], None])
        self.assertIn("bad thing", str(self.failureResultOf(ds[2]).value))
        self.assertEqual(self.successResultOf(ds[3]), "OK")
