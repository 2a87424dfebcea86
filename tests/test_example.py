"""
The example chat (``example/``) served by a real ``twistd chanserve``, driven
over real sockets: login, rooms, persisted history, live messages, the echo
route, and refusals (anonymous users, foreign origins).

``ExampleServer`` (also used by ``tests.test_browser``) migrates a fresh
SQLite database and starts ``twistd -n chanserve --settings
example.settings`` on a listening socket the test binds first and passes as
fd 3 (``--endpoint systemd:...``), so clients can connect at once: their
connections wait in the backlog until the server accepts them.
"""

import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import websocket
from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "example")
BIN = os.path.dirname(sys.executable)
TIMEOUT = 30


def example_environ(database, **extra):
    """The environment the example's processes run with (its own database, in-memory layer)."""
    env = dict(os.environ)
    for name in ("DJANGO_SETTINGS_MODULE", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                 "NOTIFY_SOCKET", "CHANSERVE_LAYER"):
        env.pop(name, None)
    env.update({"CHANSERVE_EXAMPLE_DB": database, "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "example.settings"}, **extra)
    return env


def manage(database, *args):
    """Run ``example/manage.py`` with ``args``; the finished ``CompletedProcess``."""
    return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE,
                          env=example_environ(database), capture_output=True, text=True,
                          timeout=120)


class ExampleServer:
    """The example project under ``twistd chanserve``, on a fresh database, for one test."""

    def __init__(self, testcase, extra_args=(), environ=None):
        self.testcase = testcase
        self.environ = dict(environ or {})
        self.workers = []
        # Under trial's temporary directory: the processes' logs outlive a failed run.
        self.directory = os.path.abspath(testcase.mktemp())
        os.makedirs(self.directory)
        self.database = os.path.join(self.directory, "db.sqlite3")
        migrated = manage(self.database, "migrate", "--noinput", "-v", "0")
        if migrated.returncode:
            raise AssertionError("migrate failed:\n" + migrated.stdout + migrated.stderr)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        testcase.addCleanup(self.listener.close)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.starts = 0
        self.process = None
        self.start()
        testcase.addCleanup(self.stop)
        testcase.addCleanup(self.check_alive)

    def start(self):
        """Start (or restart, after ``stop``) the server process on the same socket."""
        fd = self.listener.fileno()
        # systemd's protocol: the socket as fd 3, LISTEN_PID the pid that
        # reads it (the shim's, kept by exec). Not a shell: dash refuses fds
        # above 9 in redirections, and a full test run has many open.
        args = [sys.executable, "-c", _SOCKET_ACTIVATION_SHIM, str(fd),
                os.path.join(BIN, "twistd"), "--nodaemon", "--pidfile=", "chanserve",
                "--settings", "example.settings",
                "--endpoint", "systemd:domain=INET:index=0", *self.extra_args]
        self.starts += 1
        self.stopped = False
        with open(os.path.join(self.directory, f"twistd{self.starts}.log"), "wb") as log:
            self.process = subprocess.Popen(
                args, cwd=EXAMPLE, pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                env=example_environ(self.database, LISTEN_FDS="1", LISTEN_FDNAMES="http",
                                    **self.environ))

    def start_worker(self):
        """Start a ``twistd chanserve --worker-only`` process on the same project and database."""
        log = open(os.path.join(self.directory, f"worker{len(self.workers)}.log"), "wb")
        self.testcase.addCleanup(log.close)
        worker = subprocess.Popen(
            [os.path.join(BIN, "twistd"), "--nodaemon", "--pidfile=", "chanserve",
             "--settings", "example.settings", "--worker-only"],
            cwd=EXAMPLE, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=example_environ(self.database, **self.environ))
        self.workers.append(worker)
        self.testcase.addCleanup(_stop_process, worker)
        return worker

    def log(self):
        """The interface (or all-in-one) process's log, then the workers' logs."""
        text = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".log"):
                with open(os.path.join(self.directory, name), encoding="utf-8", errors="replace") as f:
                    text.append(f"--- {name} ---\n{f.read()}")
        return "\n".join(text)

    def check_alive(self):
        """Fail with the logs if the server died without being stopped."""
        if not self.stopped and self.process.poll() is not None:
            raise AssertionError(
                f"twistd exited by itself (status {self.process.returncode}):\n{self.log()[-4000:]}")

    def stop(self):
        """SIGTERM and wait (SIGKILL if it will not go); the exit status."""
        self.stopped = True
        return _stop_process(self.process)


_SOCKET_ACTIVATION_SHIM = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def _stop_process(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
    return process.returncode


class Browser:
    """A cookie-keeping HTTP client (urllib) plus WebSockets with the same cookies."""

    def __init__(self, server):
        self.server = server
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path):
        """GET ``path`` (following redirects); ``(final URL, status, body text)``."""
        with self.opener.open(self.server.url + path, timeout=TIMEOUT) as response:
            return response.url, response.status, response.read().decode()

    def login(self, username="demo", password="demo", next_path="/"):
        """Log in through the login page's form, as a person would; the page landed on."""
        _, _, page = self.get("/accounts/login/?next=" + urllib.parse.quote(next_path))
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrfmiddlewaretoken": token, "next": next_path}).encode()
        request = urllib.request.Request(self.server.url + "/accounts/login/", data=data,
                                         headers={"Referer": self.server.url + "/accounts/login/"})
        with self.opener.open(request, timeout=TIMEOUT) as response:
            return response.url, response.status, response.read().decode()

    def cookie_header(self):
        return "; ".join(f"{c.name}={c.value}" for c in self.cookies)

    def websocket(self, path, origin=None):
        """Open a WebSocket to ``path`` with this browser's cookies and (by default) our Origin."""
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.server.port}{path}", timeout=TIMEOUT,
            cookie=self.cookie_header() or None, origin=origin or self.server.url)
        return ws


def history(page):
    """The messages a room page embeds (its ``json_script`` block)."""
    block = re.search(r'<script id="history" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


class ExampleChatTests(unittest.SynchronousTestCase):
    """The example chat, end to end, with the in-memory layer (what ``make run`` serves)."""

    def setUp(self):
        self.server = ExampleServer(self)
        self.room = "room-" + secrets.token_hex(3)


    def test_login_chat_and_history(self):
        """
        The demo user logs in through the form, two sockets join a room, a
        message sent on one reaches both live, and the room page then shows
        it in its history (saved through chat-messages as a ChatMessage).
        """
        browser = Browser(self.server)
        url, status, page = browser.login(next_path=f"/chat/{self.room}/")
        self.assertEqual((url, status), (f"{self.server.url}/chat/{self.room}/", 200))
        self.assertIn(f'<span id="room-name">{self.room}</span>', page)
        self.assertEqual(history(page), [])
        first = browser.websocket(f"/chat/{self.room}/")
        self.addCleanup(first.close)
        second = browser.websocket(f"/chat/{self.room}/")
        self.addCleanup(second.close)
        first.send("hello, room")
        for ws in (first, second):
            received = json.loads(ws.recv())
            self.assertEqual((received["room"], received["user"], received["message"]),
                             (self.room, "demo", "hello, room"))
        _, _, page = browser.get(f"/chat/{self.room}/")
        self.assertEqual([(m["user"], m["message"]) for m in history(page)], [("demo", "hello, room")])
        _, _, data = browser.get(f"/chat/{self.room}/?format=json")
        self.assertEqual([m["message"] for m in json.loads(data)["history"]], ["hello, room"])

    def test_rooms_are_separate(self):
        """A message said in one room is not heard in another."""
        browser = Browser(self.server)
        browser.login()
        here = browser.websocket(f"/chat/{self.room}/")
        self.addCleanup(here.close)
        there = browser.websocket(f"/chat/{self.room}-other/")
        self.addCleanup(there.close)
        there.send("over there")
        self.assertEqual(json.loads(there.recv())["message"], "over there")
        here.send("over here")
        # Had "over there" reached this socket, it would have come first.
        self.assertEqual(json.loads(here.recv())["message"], "over here")

    def test_many_messages_all_arrive(self):
        """Twenty messages sent back to back all reach both sockets (strict ordering keeps up)."""
        browser = Browser(self.server)
        browser.login()
        sockets = [browser.websocket(f"/chat/{self.room}/") for _ in range(2)]
        for ws in sockets:
            self.addCleanup(ws.close)
        sent = [f"message {i}" for i in range(20)]
        for text in sent:
            sockets[0].send(text)
        for ws in sockets:
            got = [json.loads(ws.recv())["message"] for _ in sent]
            self.assertEqual(sorted(got), sorted(sent))

    def test_anonymous_socket_refused(self):
        """A WebSocket without a logged-in session is refused with HTTP 403."""
        browser = Browser(self.server)
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            browser.websocket(f"/chat/{self.room}/")
        self.assertEqual(caught.exception.status_code, 403)

    def test_foreign_origin_refused(self):
        """A logged-in user's cookies sent from another site's page are refused (403)."""
        browser = Browser(self.server)
        browser.login()
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            browser.websocket(f"/chat/{self.room}/", origin="http://evil.example")
        self.assertEqual(caught.exception.status_code, 403)

    def test_pages_need_login(self):
        """The room page sends anonymous visitors to the login page, which names the demo user."""
        url, status, page = Browser(self.server).get(f"/chat/{self.room}/")
        self.assertEqual(url, f"{self.server.url}/accounts/login/?next=/chat/{self.room}/")
        self.assertIn("<code>demo</code>, password <code>demo</code>", page)

    def test_wrong_password(self):
        """A wrong password stays on the login page with an error."""
        url, status, page = Browser(self.server).login(password="not-demo")
        self.assertTrue(url.startswith(f"{self.server.url}/accounts/login/"), url)
        self.assertIn("Your username and password didn't match", page)

    def test_echo_route(self):
        """``/chat/`` is the seed's echo server (for its JavaScript console snippet)."""
        ws = Browser(self.server).websocket("/chat/")
        self.addCleanup(ws.close)
        ws.send("hello world")
        self.assertEqual(ws.recv(), "hello world")

    def test_index_lists_rooms(self):
        """The index page links to rooms that have messages, and ``?room=`` goes to a room."""
        browser = Browser(self.server)
        browser.login()
        ws = browser.websocket(f"/chat/{self.room}/")
        self.addCleanup(ws.close)
        ws.send("hi")
        ws.recv()
        _, _, page = browser.get("/")
        self.assertIn(f'href="/chat/{self.room}/"', page)
        url, _, _ = browser.get("/?room=Board+Games")
        self.assertEqual(url, f"{self.server.url}/chat/board-games/")

    def test_graceful_stop(self):
        """SIGTERM stops the server cleanly while a socket is open (twistd ends by the signal)."""
        browser = Browser(self.server)
        browser.login()
        ws = browser.websocket(f"/chat/{self.room}/")
        self.addCleanup(ws.close)
        self.assertIn(self.server.stop(), (0, -signal.SIGTERM), self.server.log())
        self.assertNotIn("Traceback", self.server.log())


class ExampleOverRedisTests(unittest.SynchronousTestCase):
    """
    The example as ``make run-redis`` runs it: an interface server
    (``--noworker``) and two workers (``--worker-only``) joined by Redis.
    """

    def setUp(self):
        from tests.redis_server import RedisServer
        self.redis = RedisServer()
        self.addCleanup(self.redis.stop)
        self.server = ExampleServer(
            self, extra_args=["--noworker"],
            environ={"CHANSERVE_LAYER": "redis", "CHANSERVE_REDIS_URL": self.redis.url})
        self.server.start_worker()
        self.server.start_worker()

    def test_login_and_chat(self):
        """Login (Django views run by a worker) and a chat between two sockets work across processes."""
        browser = Browser(self.server)
        url, status, page = browser.login(next_path="/chat/redis/")
        self.assertEqual((url, status), (f"{self.server.url}/chat/redis/", 200), self.server.log())
        sockets = [browser.websocket("/chat/redis/") for _ in range(2)]
        for ws in sockets:
            self.addCleanup(ws.close)
        sockets[1].send("across processes")
        for ws in sockets:
            self.assertEqual(json.loads(ws.recv())["message"], "across processes")
        _, _, page = browser.get("/chat/redis/")
        self.assertEqual([m["message"] for m in history(page)], ["across processes"])


class ExampleProjectTests(unittest.SynchronousTestCase):
    """The example project itself: migrations, the demo user, Django's checks."""

    def test_migrations_seed_demo_user(self):
        """``migrate`` creates the demo user (demo/demo), and the models need no new migration."""
        directory = tempfile.mkdtemp(prefix="chanserve-example-")
        self.addCleanup(shutil.rmtree, directory, True)
        database = os.path.join(directory, "db.sqlite3")
        self.assertEqual(manage(database, "migrate", "--noinput", "-v", "0").returncode, 0)
        result = manage(database, "shell", "-c",
                        "from django.contrib.auth import authenticate;"
                        "print(authenticate(username='demo', password='demo').username)")
        self.assertEqual(result.stdout.strip().splitlines()[-1], "demo", result.stderr)
        check = manage(database, "makemigrations", "--check", "--dry-run")
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_django_check(self):
        """``manage.py check`` (Django's and chanserve's system checks) passes, for both layers."""
        directory = tempfile.mkdtemp(prefix="chanserve-example-")
        self.addCleanup(shutil.rmtree, directory, True)
        database = os.path.join(directory, "db.sqlite3")
        for layer in ("inmemory", "redis"):
            env = example_environ(database, CHANSERVE_LAYER=layer)
            result = subprocess.run([sys.executable, "manage.py", "check"], cwd=EXAMPLE, env=env,
                                    capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0, layer + result.stdout + result.stderr)
