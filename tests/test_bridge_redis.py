"""
Sending from anywhere with the Redis layer: a thread of this process, and a
process with no reactor at all (a management command run by cron), which
returns only once Redis holds the message.
"""

import os
import shutil
import sys
import tempfile

from twisted.internet import reactor, threads, utils
from twisted.trial import unittest

from chanserve import Channel, Group
from chanserve.layers import RedisChannelLayer

from .redis_server import RedisServer, shared_server
from .test_layer_redis import unique_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a cron job's management command does: no reactor is running anywhere.
CRON_SCRIPT = """
import django
django.setup()
from chanserve import Channel, Group
Group("cron.group").add("cron.member")
Channel("cron.channel").send({"from": "cron", "raw": b"\\x00\\xff"})
Group("cron.group").send({"group": True})
print("sent", flush=True)
"""

# A model signal: a post_save receiver that sends, in a process without a reactor.
SIGNAL_SCRIPT = """
import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models.signals import post_save
from chanserve import Channel

def announce(sender, instance, created, **kwargs):
    Channel("signals.users").send({"created": created, "username": instance.username})

post_save.connect(announce, sender=User)
call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
User.objects.create(username="alice")
print("saved", flush=True)
"""


# A cron job whose group send finds a member full: the drop must be visible.
FULL_MEMBER_SCRIPT = """
import django
django.setup()
from chanserve import Channel, Group
Group("cron.full.group").add("cron.full.member")
for i in range(101):
    Group("cron.full.group").send({"i": i})
import warnings
warnings.warn("still Python's own")
print("sent", flush=True)
"""


class RedisBridgeTests(unittest.TestCase):
    """Channel and Group over the Redis layer from threads and from processes without a reactor."""

    def setUp(self):
        self.server = shared_server()
        self.prefix = unique_prefix()
        self.layer = RedisChannelLayer(hosts=[self.server.url], prefix=self.prefix, reactor=reactor)
        self.layer.startService()
        self.addCleanup(self.layer.stopService)
        self.addCleanup(self.layer.flush)

    def tempdir(self):
        path = tempfile.mkdtemp(prefix="chanserve-bridge-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def run_script(self, script, url=None):
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.project.settings_redis",
            CHANSERVE_REDIS_URL=url or self.server.url,
            CHANSERVE_REDIS_PREFIX=self.prefix,
            CHANSERVE_TEST_DB=os.path.join(self.tempdir(), "db.sqlite3"),
            PYTHONPATH=ROOT,
        )
        return utils.getProcessOutputAndValue(
            sys.executable, ["-c", script], env=env, path=ROOT, reactor=reactor)

    async def test_cron_process_sends(self):
        """A process with no reactor sends to a channel and a group, synchronously, and exits cleanly."""
        out, err, code = await self.run_script(CRON_SCRIPT)
        self.assertEqual((code, out, err), (0, b"sent\n", b""))
        self.assertEqual(await self.layer.receive(["cron.channel"]),
                         ("cron.channel", {"from": "cron", "raw": b"\x00\xff"}))
        self.assertEqual(await self.layer.receive(["cron.member"]), ("cron.member", {"group": True}))

    async def test_model_signal_sends(self):
        """A post_save signal receiver sends from a process without a reactor."""
        out, err, code = await self.run_script(SIGNAL_SCRIPT)
        self.assertEqual((code, out), (0, b"saved\n"), err.decode())
        self.assertEqual(await self.layer.receive(["signals.users"]),
                         ("signals.users", {"created": True, "username": "alice"}))

    async def test_cron_process_drops_logged(self):
        """
        A drop in a process with no reactor (a group member full) is logged
        to standard error through Python's logging, not lost with the process.
        """
        out, err, code = await self.run_script(FULL_MEMBER_SCRIPT)
        self.assertEqual((code, out), (0, b"sent\n"), err.decode())
        self.assertIn(b"cron.full.member", err)
        self.assertIn(b"full", err)
        # Python's warnings keep their own output (not rerouted through Twisted).
        self.assertIn(b"UserWarning: still Python's own", err)
        self.assertNotIn(b"builtins.UserWarning", err)

    async def test_cron_process_redis_down(self):
        """With Redis down, the cron process's send raises LayerUnavailable instead of hanging."""
        down = RedisServer(start=False)
        self.addCleanup(down.stop)
        started = reactor.seconds()
        out, err, code = await self.run_script(CRON_SCRIPT, url=down.url)
        self.assertNotEqual(code, 0)
        self.assertIn(b"chanserve.exceptions.LayerUnavailable", err)
        self.assertLess(reactor.seconds() - started, 20)

    async def test_thread_send_returns_when_redis_has_it(self):
        """From a non-reactor thread, Channel.send and Group.send block until Redis holds the message."""
        await self.layer.group_add("threads.group", "threads.member")
        key = f"{self.prefix}:c:threads.channel"

        def in_thread():
            Channel("threads.channel", channel_layer=self.layer).send({"n": 1})
            depth = self.server.command("LLEN", key)
            Group("threads.group", channel_layer=self.layer).send({"g": 1})
            return depth, self.server.command("LLEN", f"{self.prefix}:c:threads.member")

        self.assertEqual(await threads.deferToThread(in_thread), (1, 1))
        self.assertEqual(await self.layer.receive(["threads.channel"]), ("threads.channel", {"n": 1}))
