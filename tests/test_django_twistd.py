"""
End to end: the Django comparison project served by ``twistd -n chanserve``
over real sockets, compared with Django's test ``Client`` on the same
requests (status, headers, body, cookies).
"""

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from django.test import Client
from django.test.utils import override_settings
from twisted.trial import unittest

from tests.project import ensure_database
from tests.test_django_compare import cookie_shape, multipart, quiet
from tests.twistd_process import TwistdProcess

SETTINGS = "tests.project.settings_django"

# Headers the interface server owns (framing, identity) and values that vary.
_SERVER_HEADERS = {"date", "server", "connection", "transfer-encoding", "keep-alive", "expires"}


class Served:
    """One response read from the real server."""

    def __init__(self, response):
        self.status = response.status
        self.header_list = response.getheaders()
        self.body = response.read()

    def headers(self):
        return {k.lower(): v for k, v in self.header_list
                if k.lower() != "set-cookie" and k.lower() not in _SERVER_HEADERS}

    def cookies(self):
        jar = SimpleCookie()
        for k, v in self.header_list:
            if k.lower() == "set-cookie":
                jar.load(v)
        return jar


def memory_mb(pid):
    """(current RSS, peak RSS since the last reset) of process ``pid``, in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) if value.strip().endswith("kB") else None
    return fields["VmRSS"] // 1024, fields["VmHWM"] // 1024


def reset_peak(pid):
    """Reset the peak RSS (VmHWM) of ``pid`` to its current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


class TwistdDjangoTests(unittest.TestCase):
    """twistd chanserve answers like Django's test client."""

    def setUp(self):
        ensure_database()
        self.proc = TwistdProcess.shared(SETTINGS, migrate=True)
        overrides = override_settings(ROOT_URLCONF="tests.project.django_urls", DEBUG=True)
        overrides.enable()
        self.addCleanup(overrides.disable)
        self.client = Client(raise_request_exception=False, enforce_csrf_checks=True)
        quiet(self, "django.request")
        quiet(self, "django.security.csrf")
        self.cookies = SimpleCookie()

    def served_shell(self, code):
        """Run ``code`` in ``manage.py shell`` against the served project's database."""
        subprocess.run(
            [sys.executable, "-m", "django", "shell", "--settings", SETTINGS, "-c", code],
            cwd=self.proc.directory, env=self.proc.env, check=True, timeout=60,
            stdout=subprocess.DEVNULL)

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.proc.port, timeout=30)
        self.addCleanup(connection.close)
        all_headers = {"Host": "testserver"}
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{m.key}={m.coded_value}" for m in self.cookies.values())
        all_headers.update(headers or {})
        connection.request(method, path, body=body, headers=all_headers)
        served = Served(connection.getresponse())
        for morsel in served.cookies().values():
            self.cookies[morsel.key] = morsel.value
        return served

    def assertSame(self, theirs, ours, same_body=True, same_cookie_values=True):
        self.assertEqual(ours.status, theirs.status_code)
        their_headers = {k.lower(): v for k, v in theirs.items() if k.lower() not in _SERVER_HEADERS}
        our_headers = ours.headers()
        if "content-length" not in their_headers:
            our_headers.pop("content-length", None)
        self.assertEqual(our_headers, their_headers)
        their_body = b"".join(theirs.streaming_content) if theirs.streaming else theirs.content
        if same_body:
            self.assertEqual(ours.body, their_body)
        self.assertEqual(cookie_shape(ours.cookies()), cookie_shape(theirs.cookies))
        if same_cookie_values:
            self.assertEqual({k: m.value for k, m in ours.cookies().items()},
                             {k: m.value for k, m in theirs.cookies.items()})

    def test_plain_and_meta(self):
        """A plain view, and what Django sees of query strings, duplicate headers and cookies."""
        self.assertSame(self.client.get("/django/hello/"), self.request("GET", "/django/hello/"))
        query = "a=1&a=2&q=%C3%A9t%C3%A9"
        ours = self.request("GET", "/django/meta/?" + query,
                            headers={"Accept": "text/html", "User-Agent": "t", "Cookie": "k=v"})
        theirs = self.client.get("/django/meta/?" + query,
                                 headers={"accept": "text/html", "user-agent": "t", "cookie": "k=v"})
        self.assertSame(theirs, ours)
        self.assertEqual(json.loads(ours.body)["GET"], {"a": ["1", "2"], "q": ["été"]})

    def test_errors(self):
        """404 and 500: same status and content type (DEBUG technical pages)."""
        for path in ("/django/nowhere/", "/django/404/", "/django/500/"):
            ours = self.request("GET", path)
            theirs = self.client.get(path)
            self.assertEqual(ours.status, theirs.status_code)
            self.assertEqual(ours.headers()["content-type"], theirs["Content-Type"])
        self.assertIn(b"ValueError", ours.body)

    def test_cookies_head_redirects(self):
        """Several Set-Cookie headers, HEAD without a body, redirects."""
        self.assertSame(self.client.get("/django/cookies/"), self.request("GET", "/django/cookies/"))
        head = self.request("HEAD", "/django/hello/")
        self.assertSame(self.client.head("/django/hello/"), head)
        self.assertEqual((head.body, head.headers()["content-length"]), (b"", "17"))
        for path in ("/django/go/", "/django/hello"):
            self.assertSame(self.client.get(path), self.request("GET", path))

    def test_unicode(self):
        """A percent-encoded UTF-8 path and query reach the view decoded."""
        ours = self.request("GET", "/django/%C3%BCn%C3%AFcode/w%C3%B6rd/?q=%C3%A7a+va")
        self.assertSame(self.client.get("/django/ünïcode/wörd/", {"q": "ça va"}), ours)
        self.assertEqual(ours.body.decode(), "word=wörd q=ça va path=/django/ünïcode/wörd/")

    def test_csrf_and_login(self):
        """CSRF: 403 without the token, accepted with it; login sets a session that authenticates."""
        self.served_shell(
            "from django.contrib.auth.models import User; "
            "User.objects.filter(username='e2e').delete(); "
            "User.objects.create_user('e2e', password='pw-e2e-123')")
        from django.contrib.auth.models import User
        User.objects.filter(username="e2e").delete()
        User.objects.create_user("e2e", password="pw-e2e-123")
        self.addCleanup(User.objects.filter(username="e2e").delete)

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        page = self.request("GET", "/django/form/")
        self.assertSame(self.client.get("/django/form/"), page, same_body=False,
                        same_cookie_values=False)
        refused = self.request("POST", "/django/form/", body=b"name=x", headers=form)
        self.assertEqual(refused.status, 403)
        self.assertEqual(self.client.post("/django/form/", b"name=x",
                                          content_type=form["Content-Type"]).status_code, 403)
        token = page.body.decode().split("=", 1)[1]
        accepted = self.request("POST", "/django/form/", headers=form,
                                body=b"name=x&csrfmiddlewaretoken=" + token.encode())
        self.assertEqual((accepted.status, accepted.body), (200, b"posted x"))

        credentials = b"username=e2e&password=pw-e2e-123&csrfmiddlewaretoken="
        ours = self.request("POST", "/django/login/", headers=form,
                            body=credentials + self.cookies["csrftoken"].value.encode())
        self.client.get("/django/login/")
        theirs = self.client.post("/django/login/",
                                  credentials + self.client.cookies["csrftoken"].value.encode(),
                                  content_type=form["Content-Type"])
        self.assertSame(theirs, ours, same_cookie_values=False)
        self.assertEqual(self.request("GET", "/django/whoami/").body, b"e2e")
        self.assertEqual(self.client.get("/django/whoami/").content, b"e2e")

    def test_upload(self):
        """A 3 MiB multipart upload (over the body channel) is spilled to disk, as under Django."""
        data = os.urandom(3 << 20)
        body, content_type = multipart({"title": "t"}, {"file": ("big.bin", data)})
        ours = self.request("POST", "/django/upload/", body=body,
                            headers={"Content-Type": content_type})
        theirs = self.client.post("/django/upload/", body, content_type=content_type)
        self.assertSame(theirs, ours)
        self.assertEqual(json.loads(ours.body)["files"]["file"], {
            "name": "big.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "on_disk": True})

    def test_streaming_and_files(self):
        """A 5 MB streaming response and a FileResponse arrive whole and identical."""
        ours = self.request("GET", "/django/stream/?count=50&size=100000")
        self.assertSame(self.client.get("/django/stream/", {"count": 50, "size": 100000}), ours)
        self.assertEqual(len(ours.body), 5000000)
        theirs = self.client.get("/django/file/")
        self.assertSame(theirs, self.request("GET", "/django/file/"))
        theirs.close()

    def raw_get(self, path):
        """A connected socket that sent ``GET path``; the caller reads."""
        sock = socket.create_connection(("127.0.0.1", self.proc.port), timeout=15)
        self.addCleanup(sock.close)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: testserver\r\n\r\n".encode())
        return sock

    def test_streaming_failure_cut_short(self):
        """A stream that raises half way reaches the client visibly cut: no last chunk, closed."""
        sock = self.raw_get("/django/stream-fail/")
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        head, _, body = received.partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(body, b"5\r\nfirst\r\n")

    def test_async_stream_as_produced(self):
        """An endless stream over an async iterator: parts arrive as produced, and it is
        closed once the client leaves (the worker thread is not held)."""
        done = os.path.join(self.proc.directory, f"astream-{time.monotonic_ns()}")
        sock = self.raw_get(f"/django/astream/?done={done}")
        received = b""
        while received.count(b"tick") < 2:
            data = sock.recv(65536)
            self.assertTrue(data, received)
            received += data
        self.assertIn(b"first\n", received)
        sock.close()
        deadline = time.monotonic() + 15
        while not os.path.exists(done) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(done) as f:
            self.assertEqual(f.read(), "closed")

    def test_upload_100mb_memory(self):
        """A 100 MiB multipart upload keeps the server's peak RSS within 100 MiB of idle."""
        self.request("GET", "/django/hello/")
        pid = self.proc.process.pid
        reset_peak(pid)
        idle, _ = memory_mb(pid)
        boundary = "chanserveBigUpload"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
                '\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()

        def body():
            yield head
            for _ in range(100):
                digest.update(block)
                yield block
            yield tail

        ours = self.request("POST", "/django/upload/", body=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + (100 << 20) + len(tail))})
        _, peak = memory_mb(pid)
        self.assertEqual(ours.status, 200)
        self.assertEqual(json.loads(ours.body)["files"]["file"], {
            "name": "big.bin", "size": 100 << 20, "sha256": digest.hexdigest(), "on_disk": True})
        self.assertLess(peak - idle, 100, f"peak RSS {peak} MiB, idle {idle} MiB")

    def test_admin(self):
        """Django's admin: login redirect, CSRF-protected login, index, and adding a user."""
        self.served_shell(
            "from django.contrib.auth.models import User; "
            "User.objects.filter(username__in=['admin-e2e', 'added-e2e']).delete(); "
            "User.objects.create_superuser('admin-e2e', 'a@example.com', 'pw-admin-123')")
        first = self.request("GET", "/admin/")
        self.assertEqual((first.status, dict(first.header_list)["Location"]),
                         (302, "/admin/login/?next=/admin/"))
        page = self.request("GET", "/admin/login/?next=/admin/")
        self.assertEqual(page.status, 200)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        login = self.request("POST", "/admin/login/?next=/admin/", headers=form, body=urlencode({
            "username": "admin-e2e", "password": "pw-admin-123", "next": "/admin/",
            "csrfmiddlewaretoken": token.decode()}).encode())
        self.assertEqual((login.status, dict(login.header_list)["Location"]), (302, "/admin/"))
        index = self.request("GET", "/admin/")
        self.assertEqual(index.status, 200)
        self.assertIn(b"Site administration", index.body)
        add = self.request("GET", "/admin/auth/user/add/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', add.body).group(1)
        created = self.request("POST", "/admin/auth/user/add/", headers=form, body=urlencode({
            "username": "added-e2e", "password1": "An0ther-pass-word", "password2": "An0ther-pass-word",
            "usable_password": "true", "csrfmiddlewaretoken": token.decode(), "_save": "Save"}).encode())
        self.assertEqual(created.status, 302, created.body[:2000])
        users = self.request("GET", "/admin/auth/user/")
        self.assertIn(b"added-e2e", users.body)
