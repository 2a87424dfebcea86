"""
End to end across processes: ``twistd chanserve --noworker`` and
``twistd chanserve --worker-only`` joined by a real Redis, serving the
seed's consumers.
"""

import http.client
import secrets
import signal

import websocket
from twisted.trial.unittest import SynchronousTestCase

from .redis_server import shared_server
from .twistd_process import TwistdProcess

TIMEOUT = 10
CLEAN_STOP = (0, -signal.SIGTERM)


class SplitProcessTests(SynchronousTestCase):
    """An interface process and a worker process share the work through Redis."""

    def setUp(self):
        redis = shared_server()
        env = {"CHANSERVE_TEST_REDIS": redis.url,
               "CHANSERVE_TEST_REDIS_PREFIX": "split-" + secrets.token_hex(4)}
        self.worker = TwistdProcess("tests.project.settings_worker_redis", ["--worker-only"],
                                    listen=False, env=env)
        self.addCleanup(self.worker.stop)
        self.worker.start()
        self.interface = TwistdProcess("tests.project.settings_worker_redis", ["--noworker"],
                                       env=env)
        self.addCleanup(self.interface.stop)
        self.interface.start()

    def test_http_echo_and_chat(self):
        """HTTP, echo and group chat work with consumers in the other process; both stop cleanly."""
        conn = http.client.HTTPConnection("127.0.0.1", self.interface.port, timeout=TIMEOUT)
        conn.request("GET", "/hello/split")
        response = conn.getresponse()
        self.assertEqual((response.status, response.read()),
                         (200, b"Hello world! You asked for /hello/split"),
                         self.interface.log() + self.worker.log())
        conn.close()

        url = f"ws://127.0.0.1:{self.interface.port}"
        echo = websocket.create_connection(url + "/echo/", timeout=TIMEOUT)
        echo.send("over redis")
        self.assertEqual(echo.recv(), "over redis")
        echo.close()

        first = websocket.create_connection(url + "/chat/", timeout=TIMEOUT)
        second = websocket.create_connection(url + "/chat/", timeout=TIMEOUT)
        first.send("hi all")
        self.assertEqual(first.recv(), "[user] hi all")
        self.assertEqual(second.recv(), "[user] hi all")
        first.close()
        second.close()

        self.assertNotIn("Worker consuming", self.interface.log())
        self.assertNotIn("Interface server listening", self.worker.log())
        self.assertIn(self.interface.stop(), CLEAN_STOP)
        self.assertIn(self.worker.stop(), CLEAN_STOP, self.worker.log())
