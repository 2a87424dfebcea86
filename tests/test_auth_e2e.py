"""
End to end: the seed's first-letter-of-username chat under ``twistd chanserve``,
with logins through a Django view and the session cookie on the handshake
(or ``?session_key=`` on a second port).
"""

import http.client
import secrets
import socket
import urllib.parse

import websocket
from twisted.trial.unittest import SynchronousTestCase

from .twistd_process import TwistdProcess, free_port

TIMEOUT = 10
PASSWORD = "e2e password"


def post(port, path, fields):
    """``(status, body, session cookie or None)`` of a form POST."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", path, body=urllib.parse.urlencode(fields),
                     headers={"content-type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        body = response.read()
        cookie = None
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("sessionid="):
                cookie = value.split(";", 1)[0].split("=", 1)[1]
        return response.status, body, cookie
    finally:
        conn.close()


_second_port = []


def second_port():
    """The extra port of the shared server (chosen once, so the process is shared)."""
    if not _second_port:
        _second_port.append(free_port())
    return _second_port[0]


class AuthChatTests(SynchronousTestCase):
    """Logged-in users chat with users sharing their first letter, and only with them."""

    def setUp(self):
        self.ws_port = second_port()
        self.server = TwistdProcess.shared(
            "tests.project.settings_auth", migrate=True,
            args=["--endpoint", f"tcp:{self.ws_port}:interface=127.0.0.1"])
        self.sockets = []

    def tearDown(self):
        for ws in self.sockets:
            ws.close()

    def login(self, letter):
        """A new user whose name starts with ``letter``, logged in: ``(username, session id)``."""
        username = letter + secrets.token_hex(4)
        status, body, _ = post(self.server.port, "/auth/register/",
                               {"username": username, "password": PASSWORD})
        self.assertEqual(status, 200, body + self.server.log().encode())
        status, body, cookie = post(self.server.port, "/auth/login/",
                                    {"username": username, "password": PASSWORD})
        self.assertEqual(status, 200, body)
        self.assertIsNotNone(cookie)
        return username, cookie

    def connect(self, path, cookie=None, port=None, query=""):
        headers = [f"Cookie: sessionid={cookie}"] if cookie else []
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port or self.server.port}{path}{query}", header=headers,
            timeout=TIMEOUT)
        self.sockets.append(ws)
        return ws

    def assertSilent(self, ws):
        ws.settimeout(0.3)
        self.assertRaises((websocket.WebSocketTimeoutException, socket.timeout), ws.recv)
        ws.settimeout(TIMEOUT)

    def check_chat(self, path):
        _, alice = self.login("a")
        _, adam = self.login("a")
        _, bob = self.login("b")
        ws_alice = self.connect(path, alice)
        ws_adam = self.connect(path, adam)
        ws_bob = self.connect(path, bob)
        ws_alice.send("hello a-people")
        self.assertEqual(ws_alice.recv(), "hello a-people")
        self.assertEqual(ws_adam.recv(), "hello a-people")
        ws_bob.send("b here")
        self.assertEqual(ws_bob.recv(), "b here")
        self.assertSilent(ws_alice)
        self.assertSilent(ws_adam)

    def test_cookie_login_chat(self):
        """The seed's chat with logins through a Django view and the cookie on the handshake."""
        self.check_chat("/plain/")

    def test_ordered_chat(self):
        """The seed's slight-ordering version of the chat works the same."""
        self.check_chat("/ordered/")

    def test_session_key_on_second_port(self):
        """A socket on another port, with ?session_key= instead of a cookie, is logged in."""
        _, first = self.login("z")
        _, second = self.login("z")
        ws_http_port = self.connect("/plain/", first)
        ws_other_port = self.connect("/plain/", port=self.ws_port,
                                     query=f"?session_key={second}")
        ws_other_port.send("from the other port")
        self.assertEqual(ws_http_port.recv(), "from the other port")
        self.assertEqual(ws_other_port.recv(), "from the other port")
