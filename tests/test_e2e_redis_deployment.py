"""
A deployment in miniature: one real Redis, two ``twistd chanserve --noworker``
interface processes on two ports and two ``--worker-only`` worker processes,
serving the seed's consumers.
"""

import http.client
import secrets
import signal

import websocket
from twisted.trial.unittest import SynchronousTestCase

from .redis_server import shared_server
from .twistd_process import TwistdProcess, wait_for_port

TIMEOUT = 20
SETTINGS = "tests.project.settings_worker_redis"


class RedisDeploymentTests(SynchronousTestCase):
    """Two interface processes and two workers joined by Redis act as one site."""

    def setUp(self):
        redis = shared_server()
        env = {"CHANSERVE_TEST_REDIS": redis.url,
               "CHANSERVE_TEST_REDIS_PREFIX": "deploy-" + secrets.token_hex(4)}
        self.workers = [TwistdProcess(SETTINGS, ["--worker-only"], listen=False, env=env)
                        for _ in range(2)]
        self.interfaces = [TwistdProcess(SETTINGS, ["--noworker"], env=env) for _ in range(2)]
        # Start all four at once, then wait for each.
        for proc in self.workers + self.interfaces:
            self.addCleanup(proc.stop)
            proc.spawn()
        for worker in self.workers:
            self.assertTrue(worker.wait_for_log("Worker consuming", timeout=TIMEOUT), worker.log())
        for interface in self.interfaces:
            self.assertTrue(wait_for_port(interface.port, timeout=TIMEOUT, alive=interface.alive),
                            interface.log())
        self.sockets = []
        self.addCleanup(self._close_sockets)

    def _close_sockets(self):
        for ws in self.sockets:
            try:
                ws.close(timeout=1)
            except Exception:
                pass

    def logs(self):
        return "\n".join(f"--- {p.command[-3:]} ---\n{p.log()}" for p in self.workers + self.interfaces)

    def get(self, interface, path):
        conn = http.client.HTTPConnection("127.0.0.1", interface.port, timeout=TIMEOUT)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def chat_socket(self, interface):
        ws = websocket.create_connection(f"ws://127.0.0.1:{interface.port}/chat/", timeout=TIMEOUT)
        self.sockets.append(ws)
        return ws

    def test_http_cross_interface_group_and_big_fanout(self):
        """HTTP is served via both interfaces; a group message reaches sockets on both; 1,000 members all get every message."""
        a, b = self.interfaces
        for interface in (a, b):
            for i in range(5):
                self.assertEqual(self.get(interface, f"/hello/{i}"),
                                 (200, f"Hello world! You asked for /hello/{i}".encode()),
                                 self.logs())
        on_a, on_b = self.chat_socket(a), self.chat_socket(b)
        on_b.send("from b")
        self.assertEqual(on_a.recv(), "[user] from b")
        self.assertEqual(on_b.recv(), "[user] from b")

        members = [self.chat_socket(a if i % 2 else b) for i in range(998)]
        everyone = [on_a, on_b] + members
        for n in range(3):
            members[n].send(f"fan-out {n}")
        got = [[ws.recv() for _ in range(3)] for ws in everyone]
        expected = [f"[user] fan-out {n}" for n in range(3)]
        missing = [i for i, messages in enumerate(got) if sorted(messages) != expected]
        self.assertEqual(missing, [], self.logs()[-5000:])

    def test_worker_killed(self):
        """After kill -9 of one worker, the other keeps serving HTTP and WebSockets on both interfaces."""
        a, b = self.interfaces
        self.assertEqual(self.get(a, "/hello/before")[0], 200, self.logs())
        victim = self.workers[0]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(TIMEOUT)
        for interface in (a, b):
            for i in range(10):
                self.assertEqual(self.get(interface, f"/hello/{i}"),
                                 (200, f"Hello world! You asked for /hello/{i}".encode()),
                                 self.logs())
        on_a, on_b = self.chat_socket(a), self.chat_socket(b)
        on_a.send("still here")
        self.assertEqual(on_b.recv(), "[user] still here")
        self.assertTrue(self.workers[1].alive())
