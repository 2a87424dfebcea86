"""
A test client that serves requests through chanserve's Django bridge with no
sockets: it builds ``http.request`` messages (body chunks on a body channel),
runs the consumer (``view_consumer`` by default) in a thread and collects its
reply messages from an in-memory layer, keeping cookies like Django's test
``Client``.
"""

import itertools
from http.cookies import SimpleCookie

from twisted.internet import defer, threads

from chanserve.channel import Message
from chanserve.handler import view_consumer
from chanserve.layers import InMemoryChannelLayer

_ids = itertools.count()


class ChanserveResponse:
    """The reply messages of one request, assembled."""

    def __init__(self, messages):
        self.messages = messages
        self.status = messages[0]["status"]
        self.header_list = [(bytes(k), bytes(v)) for k, v in messages[0]["headers"]]
        self.body = b"".join(m.get("content", b"") for m in messages)

    def headers(self):
        """Headers other than Set-Cookie: {lowercased name: value str}."""
        return {k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in self.header_list if k.lower() != b"set-cookie"}

    def cookies(self):
        """The Set-Cookie headers parsed into a ``SimpleCookie``."""
        jar = SimpleCookie()
        for k, v in self.header_list:
            if k.lower() == b"set-cookie":
                jar.load(v.decode("latin-1"))
        return jar


class ChanserveClient:
    """
    Serve requests through ``consumer`` with an in-memory layer on
    ``reactor`` (the running reactor: the consumer runs in a thread and
    blocks on it). Requests return ``Deferred``s of ``ChanserveResponse``.
    """

    def __init__(self, reactor, consumer=view_consumer, layer=None):
        self.reactor = reactor
        self.consumer = consumer
        self.layer = layer if layer is not None else InMemoryChannelLayer(
            reactor=reactor, channel_capacity={"http.request.body*": 100000})
        self.cookies = SimpleCookie()

    def message(self, method, path, query=b"", headers=(), body=b"", body_chunks=(),
                scheme="http", root_path=""):
        """The ``http.request`` content for these request parts (without body_channel)."""
        n = next(_ids)
        all_headers = [[b"host", b"testserver"]]
        if self.cookies:
            all_headers.append([b"cookie", "; ".join(
                f"{m.key}={m.coded_value}" for m in self.cookies.values()).encode("latin-1")])
        all_headers += [[k.lower(), v] for k, v in headers]
        length = len(body) + sum(len(c) for c in body_chunks)
        if length and not any(k == b"content-length" for k, _ in all_headers):
            all_headers.append([b"content-length", str(length).encode()])
        return {
            "reply_channel": f"test-reply!{n}",
            "http_version": "1.1",
            "method": method,
            "scheme": scheme,
            "path": path,
            "root_path": root_path,
            "query_string": query,
            "headers": all_headers,
            "body": body,
            "client": ["127.0.0.1", 50000 + n % 10000],
            "server": ["testserver", 80],
        }

    def request(self, method, path, query=b"", headers=(), body=b"", body_chunks=(),
                scheme="http", root_path="", content=None):
        """
        Serve one request; ``body_chunks`` (if any) follow ``body`` on a body
        channel. ``content`` overrides the whole message content.
        """
        return defer.Deferred.fromCoroutine(self._request(
            content or self.message(method, path, query, headers, body, body_chunks,
                                    scheme, root_path), body_chunks))

    async def _request(self, content, body_chunks):
        layer = self.layer
        if body_chunks:
            content["body_channel"] = f"http.request.body?{next(_ids)}"
            for i, chunk in enumerate(body_chunks):
                await layer.send(content["body_channel"], {
                    "content": chunk, "more_content": i < len(body_chunks) - 1,
                    "closed": False})
        message = Message(content, "http.request", layer)
        running = threads.deferToThread(self.consumer, message)
        messages = await self.collect(content["reply_channel"])
        await running
        response = ChanserveResponse(messages)
        for morsel in response.cookies().values():
            if str(morsel["max-age"]) == "0" or morsel.value == "":
                self.cookies.pop(morsel.key, None)
            else:
                self.cookies[morsel.key] = morsel.value
        return response

    async def collect(self, reply_channel):
        """The reply messages of ``reply_channel`` up to the last one."""
        prefix = reply_channel[:reply_channel.index("!") + 1]
        messages = []
        while True:
            channel, message = await self.layer.receive([prefix])
            assert channel == reply_channel, (channel, reply_channel)
            messages.append(message)
            if not message.get("more_content"):
                return messages
