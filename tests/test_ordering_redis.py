"""
enforce_ordering across processes: two ``twistd chanserve --worker-only``
processes (8 threads each) on a real Redis, sharing one SQLite database.
"""

import atexit
import os
import secrets
import shutil
import sqlite3
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from chanserve.layers import RedisChannelLayer
from chanserve.layers._validation import new_channel_name
from tests.project.ordering_models import CREATE_TABLE_SQL

from .redis_server import shared_server
from .twistd_process import TwistdProcess

SETTINGS = "tests.project.settings_ordering_redis"


_shared = {}


def _stop_shared():
    for worker in _shared.pop("workers", ()):
        worker.stop()
    directory = _shared.pop("directory", None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def _shared_workers():
    """
    ``(env, [worker, worker])``: two worker processes (8 threads each) on a
    real Redis and one SQLite file, started by the first test that asks and
    stopped when the test run ends.
    """
    workers = _shared.get("workers")
    if workers and all(w.alive() for w in workers):
        return _shared["env"], workers
    _stop_shared()
    redis = shared_server()
    directory = _shared["directory"] = tempfile.mkdtemp(prefix="chanserve-ordering-")
    db = os.path.join(directory, "ordering.sqlite3")
    with sqlite3.connect(db) as connection:
        # WAL: the processes' readers don't wait for each other's writers.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(CREATE_TABLE_SQL)
    env = _shared["env"] = {
        "CHANSERVE_TEST_REDIS": redis.url,
        "CHANSERVE_TEST_REDIS_PREFIX": "order-" + secrets.token_hex(4),
        "CHANSERVE_TEST_DB": db,
    }
    workers = _shared["workers"] = []
    for i in range(2):
        worker = TwistdProcess(SETTINGS, ["--worker-only", "--threads", "8"], listen=False,
                               env=env, migrate=(i == 0))
        workers.append(worker)
        worker.start()
    return env, workers


atexit.register(_stop_shared)


class TwoWorkerProcessesTests(unittest.TestCase):
    """One socket's messages spread over two worker processes still run in order."""

    timeout = 120

    def setUp(self):
        env, self.workers = _shared_workers()
        self.db = env["CHANSERVE_TEST_DB"]
        self.layer = RedisChannelLayer(hosts=[env["CHANSERVE_TEST_REDIS"]],
                                       prefix=env["CHANSERVE_TEST_REDIS_PREFIX"],
                                       capacity=5000, reactor=reactor)
        self.layer.startService()
        self.addCleanup(self.layer.stopService)

    def records(self, socket):
        with sqlite3.connect(self.db) as db:
            return db.execute(
                'SELECT "order", room, pid FROM chanserve_ordering_record WHERE socket = ? '
                'ORDER BY id', (socket,)).fetchall()

    async def send(self, reply, order, path):
        if order == 0:
            channel, content = "websocket.connect", {"headers": [], "query_string": b""}
        else:
            channel, content = "websocket.receive", {"text": str(order)}
        content.update(reply_channel=reply, order=order, path=path, announce=True)
        await self.layer.send(channel, content)

    async def wait_done(self, count, sockets):
        """Wait for ``count`` announcements (one per consumer run) of ``sockets``' messages."""
        while count:
            _, content = await self.layer.receive(["ordering-done"])
            if content["socket"] in sockets:
                count -= 1

    def logs(self):
        return "\n".join(w.log() for w in self.workers)

    def assertNoLateRelease(self):
        """No message needed its timeout to be released (each was moved back at once)."""
        self.assertNotIn("released only by its timeout", self.logs())
        self.assertNotIn("never finished", self.logs())

    @defer.inlineCallbacks
    def test_strict_500_in_order(self):
        """Strict: 500 messages sent back to back run in order though both processes take them."""
        async def run():
            reply = new_channel_name("chanserve.strict!")
            for order in range(500):
                await self.send(reply, order, "/strict/")
            await self.wait_done(500, {reply})
            return reply
        reply = yield defer.Deferred.fromCoroutine(run())
        records = self.records(reply)
        self.assertEqual([r[0] for r in records], list(range(500)), self.logs())
        self.assertEqual(len({r[2] for r in records}), 2, "both worker processes took part")
        self.assertNoLateRelease()

    @defer.inlineCallbacks
    def test_slight_receivers_see_room(self):
        """Slight: every receive sees the room its socket's connect saved, across processes."""
        sockets = [(new_channel_name("chanserve.slight!"), f"room{i}") for i in range(12)]

        async def run():
            # One socket after another, its connect and receives back to back,
            # so the receives compete with their connect for both processes.
            for reply, room in sockets:
                for order in range(20):
                    await self.send(reply, order, f"/slight/{room}")
                await self.wait_done(20, {reply})
        yield defer.Deferred.fromCoroutine(run())
        pids = set()
        for reply, room in sockets:
            records = self.records(reply)
            self.assertEqual(len(records), 20)
            self.assertEqual(records[0][:2], (0, f"slight/{room}"))
            self.assertEqual({r[1] for r in records}, {f"slight/{room}"}, self.logs())
            pids.update(r[2] for r in records)
        self.assertEqual(len(pids), 2, "both worker processes took part")
        self.assertNoLateRelease()
