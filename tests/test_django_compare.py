"""
The same requests through Django's test ``Client`` and through chanserve's
Django bridge (``view_consumer`` fed ``http.request`` messages over an
in-memory layer): status, headers, body and cookies must agree.
"""

import hashlib
import json
import logging
import os

from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import override_settings
from twisted.internet import reactor
from twisted.trial import unittest

from tests.project import ensure_database
from tests.project.django_client import ChanserveClient

# Headers whose values legitimately differ between two runs.
_VARYING = {"expires", "date"}


def django_side(response):
    """(status, headers, body, cookies) of a Django test client response."""
    headers = {k.lower(): v for k, v in response.items()}
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, headers, body, response.cookies


def chanserve_side(response):
    """(status, headers, body, cookies) of a ``ChanserveResponse``."""
    return response.status, response.headers(), response.body, response.cookies()


def cookie_shape(jar):
    """Cookie names and attributes, without values and expiry times."""
    return {
        name: {k: str(v) for k, v in morsel.items()
               if v is not False and v is not None and v != "" and k != "expires"}
        for name, morsel in jar.items()
    }


def multipart(fields, files, boundary="chanserveBoundary7MA4YWxkTrZu0gW"):
    """A multipart/form-data body and its content type."""
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            .encode() + value.encode() + b"\r\n")
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def quiet(case, name):
    """Silence the logger ``name`` for the rest of the test ``case``."""
    logger = logging.getLogger(name)
    disabled, logger.disabled = logger.disabled, True
    case.addCleanup(setattr, logger, "disabled", disabled)


class DjangoComparisonTests(unittest.TestCase):
    """chanserve serves the comparison project exactly as Django's test client does."""

    def setUp(self):
        ensure_database()
        overrides = override_settings(ROOT_URLCONF="tests.project.django_urls", DEBUG=False)
        overrides.enable()
        self.addCleanup(overrides.disable)
        self.client = Client(raise_request_exception=False)
        self.chanserve = ChanserveClient(reactor)

    def assertSameResponse(self, django_response, chanserve_response, same_body=True,
                           same_cookie_values=True):
        d_status, d_headers, d_body, d_cookies = django_side(django_response)
        c_status, c_headers, c_body, c_cookies = chanserve_side(chanserve_response)
        self.assertEqual(c_status, d_status)
        self.assertEqual(
            {k: v for k, v in c_headers.items() if k not in _VARYING},
            {k: v for k, v in d_headers.items() if k not in _VARYING})
        if same_body:
            self.assertEqual(c_body, d_body)
        self.assertEqual(cookie_shape(c_cookies), cookie_shape(d_cookies))
        if same_cookie_values:
            self.assertEqual({k: m.value for k, m in c_cookies.items()},
                             {k: m.value for k, m in d_cookies.items()})

    async def _plain(self):
        ours = await self.chanserve.request("GET", "/django/hello/")
        self.assertSameResponse(self.client.get("/django/hello/"), ours)
        self.assertEqual(ours.body, b"hello from django")

    def test_plain_view(self):
        """A plain view: same status, headers and body."""
        return self._serve(self._plain())

    async def _meta(self):
        query = "a=1&a=2&q=%C3%A9t%C3%A9&empty="
        ours = await self.chanserve.request(
            "GET", "/django/meta/", query=query.encode(),
            headers=[(b"accept", b"text/html"), (b"x-multi", b"one"), (b"x-multi", b"two"),
                     (b"user-agent", b"chanserve-test"), (b"cookie", b"flavour=oat")])
        theirs = self.client.get(
            "/django/meta/?" + query,
            headers={"accept": "text/html", "x-multi": "one,two", "user-agent": "chanserve-test",
                     "cookie": "flavour=oat"})
        self.assertSameResponse(theirs, ours)
        seen = json.loads(ours.body)
        self.assertEqual(seen["GET"], {"a": ["1", "2"], "q": ["été"], "empty": [""]})
        self.assertEqual(seen["x_multi"], "one,two")
        self.assertEqual(seen["COOKIES"], {"flavour": "oat"})

    def test_request_meta(self):
        """Query strings (repeated keys, UTF-8), duplicate headers and cookies read the same."""
        return self._serve(self._meta())

    async def _secure(self):
        ours = await self.chanserve.request("GET", "/django/meta/", scheme="https")
        theirs = self.client.get("/django/meta/", secure=True)
        self.assertSameResponse(theirs, ours)
        self.assertTrue(json.loads(ours.body)["is_secure"])

    def test_https_scheme(self):
        """The message's scheme makes request.is_secure() and absolute URIs right."""
        return self._serve(self._secure())

    async def _errors(self):
        for path in ("/django/404/", "/django/500/", "/django/nowhere/"):
            ours = await self.chanserve.request("GET", path)
            self.assertSameResponse(self.client.get(path), ours)
        self.assertEqual(ours.status, 404)

    def test_error_pages(self):
        """Http404, an unknown URL and an exception give Django's own 404/500 pages."""
        self.flushLoggedErrors()
        return self._serve(self._errors())

    async def _debug_500(self):
        ours = await self.chanserve.request("GET", "/django/500/")
        self.assertEqual(ours.status, 500)
        self.assertIn(b"ValueError", ours.body)
        self.assertIn(b"boom", ours.body)

    def test_debug_traceback(self):
        """With DEBUG, an exception gives Django's technical 500 page."""
        overrides = override_settings(DEBUG=True)
        overrides.enable()
        self.addCleanup(overrides.disable)
        quiet(self, "django.request")
        return self._serve(self._debug_500())

    async def _cookies(self):
        ours = await self.chanserve.request("GET", "/django/cookies/")
        self.assertSameResponse(self.client.get("/django/cookies/"), ours)
        self.assertEqual(sum(1 for k, _ in ours.header_list if k == b"Set-Cookie"), 3)

    def test_cookies(self):
        """Every Set-Cookie of a response is kept, with its attributes."""
        return self._serve(self._cookies())

    async def _head(self):
        ours = await self.chanserve.request("HEAD", "/django/hello/")
        self.assertSameResponse(self.client.head("/django/hello/"), ours)
        self.assertEqual(ours.body, b"")
        self.assertEqual(ours.headers()["content-length"], "17")

    def test_head(self):
        """HEAD: the GET headers (Content-Length included) and no body."""
        return self._serve(self._head())

    async def _no_content(self):
        ours = await self.chanserve.request("GET", "/django/204/")
        self.assertSameResponse(self.client.get("/django/204/"), ours)
        self.assertEqual(ours.body, b"")

    def test_no_content(self):
        """A 204 response carries no body."""
        return self._serve(self._no_content())

    async def _redirects(self):
        for path in ("/django/go/", "/django/hello"):
            ours = await self.chanserve.request("GET", path)
            self.assertSameResponse(self.client.get(path), ours)
        self.assertEqual(ours.status, 301)
        self.assertEqual(ours.headers()["location"], "/django/hello/")

    def test_redirects(self):
        """A view's redirect and CommonMiddleware's APPEND_SLASH redirect."""
        return self._serve(self._redirects())

    async def _unicode(self):
        ours = await self.chanserve.request(
            "GET", "/django/ünïcode/wörd/", query="q=ça va".encode().replace(b" ", b"+"))
        theirs = self.client.get("/django/ünïcode/wörd/", {"q": "ça va"})
        self.assertSameResponse(theirs, ours)
        self.assertEqual(ours.body.decode(), "word=wörd q=ça va path=/django/ünïcode/wörd/")

    def test_unicode_path_and_query(self):
        """Non-ASCII paths and query strings reach the view decoded the same way."""
        return self._serve(self._unicode())

    async def _csrf(self):
        client = Client(enforce_csrf_checks=True)
        page = client.get("/django/form/")
        ours_page = await self.chanserve.request("GET", "/django/form/")
        self.assertSameResponse(page, ours_page, same_body=False, same_cookie_values=False)
        token = ours_page.body.decode().split("=", 1)[1]
        body = b"name=chan"
        form = (b"content-type", b"application/x-www-form-urlencoded")
        # Without the token: 403 on both.
        ours = await self.chanserve.request("POST", "/django/form/", headers=[form], body=body)
        theirs = client.post("/django/form/", body, content_type=form[1].decode())
        self.assertEqual((ours.status, theirs.status_code), (403, 403))
        self.assertSameResponse(theirs, ours)
        # With it: accepted on both.
        their_token = page.content.decode().split("=", 1)[1]
        ours = await self.chanserve.request(
            "POST", "/django/form/", headers=[form], body=body + b"&csrfmiddlewaretoken=" + token.encode())
        theirs = client.post("/django/form/", body + b"&csrfmiddlewaretoken=" + their_token.encode(),
                             content_type=form[1].decode())
        self.assertSameResponse(theirs, ours)
        self.assertEqual(ours.body, b"posted chan")

    def test_csrf_form(self):
        """A CSRF-protected POST: 403 without the token, accepted with it."""
        return self._serve(self._csrf())

    async def _login(self):
        User.objects.filter(username="chanuser").delete()
        User.objects.create_user("chanuser", password="s3cret-pass")
        self.addCleanup(User.objects.filter(username="chanuser").delete)
        client = Client(enforce_csrf_checks=True)
        theirs = client.get("/django/login/")
        ours = await self.chanserve.request("GET", "/django/login/")
        self.assertSameResponse(theirs, ours, same_body=False, same_cookie_values=False)
        form = (b"content-type", b"application/x-www-form-urlencoded")
        credentials = b"username=chanuser&password=s3cret-pass&csrfmiddlewaretoken="
        ours = await self.chanserve.request(
            "POST", "/django/login/", headers=[form],
            body=credentials + self.chanserve.cookies["csrftoken"].value.encode())
        theirs = client.post("/django/login/", credentials + client.cookies["csrftoken"].value.encode(),
                             content_type=form[1].decode())
        self.assertSameResponse(theirs, ours, same_cookie_values=False)
        self.assertEqual(ours.status, 302)
        self.assertIn("sessionid", self.chanserve.cookies)
        ours = await self.chanserve.request("GET", "/django/whoami/")
        self.assertSameResponse(client.get("/django/whoami/"), ours)
        self.assertEqual(ours.body, b"chanuser")

    def test_login_session(self):
        """Logging in sets the session cookie; the next request is authenticated by it."""
        return self._serve(self._login())

    async def _upload(self):
        data = os.urandom(1 << 20)
        body, content_type = multipart({"title": "random bytes"}, {"file": ("blob.bin", data)})
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
        ours = await self.chanserve.request(
            "POST", "/django/upload/", headers=[(b"content-type", content_type.encode())],
            body=chunks[0], body_chunks=chunks[1:])
        theirs = self.client.post("/django/upload/", body, content_type=content_type)
        self.assertSameResponse(theirs, ours)
        seen = json.loads(ours.body)
        self.assertEqual(seen["fields"], {"title": ["random bytes"]})
        self.assertEqual(seen["files"]["file"], {
            "name": "blob.bin", "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "on_disk": True})

    def test_multipart_upload_to_disk(self):
        """A 1 MiB multipart upload over the body channel is spilled to disk like Django's."""
        overrides = override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=65536)
        overrides.enable()
        self.addCleanup(overrides.disable)
        return self._serve(self._upload())

    async def _raw_body(self):
        data = os.urandom(300000)
        chunks = [data[i:i + 100000] for i in range(0, len(data), 100000)]
        ours = await self.chanserve.request("POST", "/django/body/", body=b"",
                                            body_chunks=chunks)
        theirs = self.client.post("/django/body/", data, content_type="application/octet-stream")
        self.assertSameResponse(theirs, ours)
        self.assertEqual(json.loads(ours.body)["length"], len(data))

    def test_raw_body(self):
        """request.body joins the first body and every body channel chunk."""
        return self._serve(self._raw_body())

    async def _streaming(self):
        path = "/django/stream/"
        ours = await self.chanserve.request("GET", path, query=b"count=7&size=100000")
        self.assertSameResponse(self.client.get(path, {"count": 7, "size": 100000}), ours)
        self.assertEqual(len(ours.body), 700000)
        self.assertGreaterEqual(len(ours.messages), 9)

    def test_streaming(self):
        """A StreamingHttpResponse arrives whole, in several messages."""
        return self._serve(self._streaming())

    async def _file(self):
        ours = await self.chanserve.request("GET", "/django/file/")
        theirs = self.client.get("/django/file/")
        self.assertSameResponse(theirs, ours)
        theirs.close()

    def test_file_response(self):
        """A FileResponse: same headers (Content-Disposition, length) and bytes."""
        return self._serve(self._file())

    def _serve(self, coroutine):
        from twisted.internet import defer
        return defer.Deferred.fromCoroutine(coroutine)
