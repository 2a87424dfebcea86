"""
The Redis layer when connections can't be set up: restricted ACL users,
``maxclients``, wrong passwords, untrusted certificates. Against real
redis-servers: every failure is retried with backoff and reported once,
with its cause.
"""

from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.python import failure
from twisted.trial import unittest

from chanserve.exceptions import LayerUnavailable
from chanserve.layers import RedisChannelLayer
from chanserve.layers._redis_connection import RedisAddress

from .redis_server import RedisServer
from .test_layer_redis import RedisLayerCase, until


class LogCapture:
    """Warnings logged while a test runs (their formatted text)."""

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warnings(self, containing):
        from twisted.logger import LogLevel, formatEvent
        return [formatEvent(e) for e in self.events
                if e.get("log_level") == LogLevel.warn and containing in formatEvent(e)]


def connections_received(server, password=None):
    info = server.command("INFO", "stats", password=password).decode()
    return int(info.split("total_connections_received:")[1].split()[0])


async def connections_received_by(layer):
    """The same count, asked on the layer's own command connection (when no other fits)."""
    proto = await layer._shards[0].command_protocol(fail_fast=False)
    info = (await proto.command("INFO", "stats")).decode()
    # Connections refused at maxclients are counted apart.
    return sum(int(info.split(f"{key}:")[1].split()[0])
               for key in ("total_connections_received", "rejected_connections"))


class RedisSetupFailureTests(RedisLayerCase):
    """Connection set-up failures: backoff, one line with the cause, nothing unhandled."""

    async def test_acl_user_without_client_command(self):
        """
        An ACL user denied ``CLIENT``: receiving can't work safely (a receive
        ending elsewhere could not end its BLPOP), so the layer says which
        permissions to grant, once, and retries with backoff instead of spinning.
        """
        [server] = self.private_servers()
        server.command("ACL", "SETUSER", "app", "on", ">apppw", "~*", "&*", "+@all", "-client")
        logs = LogCapture(self)
        layer = self.layer(hosts=[f"redis://app:apppw@127.0.0.1:{server.port}/0"])
        await layer.send("acl.test", {"n": 1})
        before = connections_received(server)
        receiving = layer.receive(["acl.test"])
        await task.deferLater(reactor, 1.0, lambda: None)
        self.assertNoResult(receiving)
        self.assertLess(connections_received(server) - before, 10)
        receiving.cancel()
        self.assertFailure(receiving, defer.CancelledError)
        errors = [e for e in logs.events if "refuses CLIENT" in e.get("log_format", "")]
        self.assertEqual(len(errors), 1)
        self.assertIn("+client|id +client|unblock", errors[0]["log_format"])
        # Granted: the same layer receives (the message is still there).
        server.command("ACL", "SETUSER", "app", "+client|id", "+client|unblock")
        self.assertEqual(await layer.receive(["acl.test"]), ("acl.test", {"n": 1}))

    async def backs_off_at_maxclients(self, host):
        """
        With ``maxclients`` reached (only the layer's command connection
        fits), a receive makes few connection attempts in a second, then
        completes once Redis takes connections again. Returns the warnings.
        """
        logs = LogCapture(self)
        layer = self.layer(hosts=[host])
        command = (await layer._shards[0].command_protocol(fail_fast=False)).command
        await command("CONFIG", "SET", "maxclients", "1")
        before = await connections_received_by(layer)
        receiving = layer.receive(["full.clients"])
        await task.deferLater(reactor, 1.0, lambda: None)
        self.assertNoResult(receiving)
        # A spinning receive made hundreds.
        self.assertLess(await connections_received_by(layer) - before, 8)
        await command("CONFIG", "SET", "maxclients", "100")
        await layer.send("full.clients", {"n": 1})
        self.assertEqual(await receiving, ("full.clients", {"n": 1}))
        return logs

    async def test_blocking_connections_back_off(self):
        """At ``maxclients`` a receive backs off instead of spinning, and logs the cause once."""
        [server] = self.private_servers()
        logs = await self.backs_off_at_maxclients(server.url)
        [line] = logs.warnings("Cannot open a blocking connection")
        self.assertIn("max number of clients", line)

    async def test_maxclients_without_database_number(self):
        """
        The same with a host given without a database (no SELECT, so Redis's
        refusal arrives as the reply to CLIENT ID and must not pass for it).
        """
        [server] = self.private_servers()
        await self.backs_off_at_maxclients(("127.0.0.1", server.port))

    async def test_wrong_password_reported_once(self):
        """
        A wrong password: sends fail with ``LayerUnavailable`` naming the
        cause, attempts back off, the cause is logged once, and no Deferred
        is left failing unhandled.
        """
        [server] = self.private_servers()
        server.command("CONFIG", "SET", "requirepass", "right")
        logs = LogCapture(self)
        layer = RedisChannelLayer(hosts=[f"redis://:wrong@127.0.0.1:{server.port}/0"],
                                  reactor=reactor, connect_timeout=1.0)
        layer.startService()
        self.addCleanup(layer.stopService)
        before = connections_received(server, password="right")
        with self.assertRaises(LayerUnavailable) as caught:
            await layer.send("pw.test", {})
        self.assertIn("WRONGPASS", str(caught.exception))
        await task.deferLater(reactor, 1.5, lambda: None)
        # Backoff from 0.1 s doubling: a handful of attempts, not one every few ms.
        self.assertLess(connections_received(server, password="right") - before, 10)
        lines = logs.warnings("Setting up the connection to Redis")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("WRONGPASS", lines[0])
        self.assertNotIn("wrong", lines[0].replace("WRONGPASS", ""))

    async def test_untrusted_certificate_says_so(self):
        """A rediss:// server whose certificate is not trusted: the error names the verification."""
        server = RedisServer(tls=True)
        self.addCleanup(server.stop)
        other = RedisServer(tls=True, start=False)
        self.addCleanup(other.stop)
        logs = LogCapture(self)
        layer = RedisChannelLayer(
            hosts=[f"rediss://localhost:{server.tls_port}/0?ssl_ca_certs={other.ca_file}"],
            reactor=reactor, connect_timeout=2.0)
        layer.startService()
        self.addCleanup(layer.stopService)
        with self.assertRaises(LayerUnavailable) as caught:
            await layer.send("tls.test", {})
        self.assertIn("certificate verify failed", str(caught.exception))
        self.assertIn("certificate verify failed",
                      " ".join(logs.warnings("Redis at rediss://localhost")))


    async def test_stop_during_tls_handshake(self):
        """
        rediss:// to a plain-text port: the TLS handshake never completes;
        stopping the layer then does not wait for the command watchdog.
        """
        [server] = self.private_servers()
        layer = RedisChannelLayer(hosts=[f"rediss://127.0.0.1:{server.port}/0"],
                                  reactor=reactor, command_timeout=30.0)
        layer.startService()
        def connected():  # the layer's connection, besides the one asking
            info = server.command("INFO", "clients").decode()
            return int(info.split("connected_clients:")[1].split()[0]) >= 2
        await until(connected)
        started = reactor.seconds()
        await layer.stopService()
        # Not the 30 s of the command watchdog.
        self.assertLess(reactor.seconds() - started, 3.0)


class RedisAddressTests(unittest.SynchronousTestCase):
    """Errors about a hosts entry never show its password."""

    def test_password_hidden(self):
        """A bad port or database in a URL with a password: the message hides the password."""
        for entry in ("redis://:topsecret@127.0.0.1:abc/0", "redis://user:topsecret@h/x",
                      "redis://u:top@secret@h:99999/0"):
            e = self.assertRaises(ValueError, RedisAddress.parse, entry)
            self.assertNotIn("topsecret", str(e).replace("@", ""))
            self.assertIn("***", str(e))

    def test_str_hides_password(self):
        """The address as shown in logs has no credentials."""
        address = RedisAddress.parse("redis://user:topsecret@h:6380/2")
        self.assertEqual(str(address), "redis://h:6380/2")


class BlockingBackoffTests(unittest.SynchronousTestCase):
    """``_Shard.blocking_failed``: the delays before trying a blocking connection again."""

    def test_delays_grow_while_up(self):
        """While the command connection is up, failures in a row wait longer each time, to 10 s."""
        layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"], reactor=task.Clock())
        shard = layer._shards[0]
        shard.state = "up"
        f = failure.Failure(ConnectionRefusedError("refused"))
        delays = [shard.blocking_failed(f) for _ in range(20)]
        self.assertTrue(0.1 <= delays[0] < 0.5, delays)
        self.assertTrue(all(b >= a - 0.25 for a, b in zip(delays, delays[1:])), delays)
        self.assertTrue(9.0 <= delays[-1] <= 10.25, delays)
        self.flushLoggedErrors()

    def test_no_delay_while_down(self):
        """While the server is down, receives wait for the command connection instead (0)."""
        layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"], reactor=task.Clock())
        shard = layer._shards[0]
        shard.state = "down"
        self.assertEqual(shard.blocking_failed(failure.Failure(ConnectionRefusedError())), 0)
