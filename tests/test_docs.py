"""
The documentation's code runs.

Every Python block of ``docs/getting-started.rst`` is ``literalinclude``d from
``docs/examples/myproject/``; these tests import those modules and run each
step of the walk-through through a real ``WorkerService`` and an in-memory
layer, playing the interface server's part (``DocsHarness``). Other tests
check that the reference lists every ``twistd chanserve`` option and that
the docs build with warnings as errors.
"""

import importlib
import itertools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

from django.conf import settings
from django.test.utils import override_settings
from twisted.internet import defer, reactor
from twisted.trial import unittest

from chanserve.layers import InMemoryChannelLayer, build_channel_layer, channel_layers
from chanserve.routing import Router, load_routing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
EXAMPLES = os.path.join(DOCS, "examples")
TIMEOUT = 20


def use_docs_examples(testcase):
    """Make ``myproject`` (``docs/examples/myproject``) importable for this test."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
        testcase.addCleanup(sys.path.remove, EXAMPLES)


def example(name):
    """Import ``myproject.<name>``."""
    return importlib.import_module(f"myproject.{name}")


class ObservedLayer(InMemoryChannelLayer):
    """An in-memory layer that also reports each completed ``group_discard`` on ``discarded``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.discarded = defer.DeferredQueue()

    def group_discard(self, group, channel):
        d = super().group_discard(group, channel)

        def report(result):
            self.discarded.put((group, channel))
            return result
        return d.addCallback(report)


class FakeSocket:
    """One WebSocket connection, as the interface server would present it to the layer."""

    _numbers = itertools.count()

    def __init__(self, harness, path, headers=()):
        self.harness = harness
        self.path = path
        self.headers = [list(h) for h in headers]
        self.reply_channel = f"{harness.prefix}{next(self._numbers)}{secrets.token_hex(12)}"
        self.order = 0

    def _send(self, channel, content):
        content["reply_channel"] = self.reply_channel
        content["path"] = self.path
        return self.harness.layer.send(channel, content)

    @defer.inlineCallbacks
    def connect(self):
        """Send ``websocket.connect``; fires with the first reply (the accept or the reject)."""
        yield self._send("websocket.connect", {
            "scheme": "ws", "root_path": "", "query_string": b"", "headers": self.headers,
            "client": ["127.0.0.1", 50000], "server": ["127.0.0.1", 8000], "order": 0,
        })
        reply = yield self.receive()
        return reply

    def send(self, text):
        """A ``websocket.receive`` with ``text``, numbered like the server does."""
        self.order += 1
        return self._send("websocket.receive", {"text": text, "order": self.order})

    def close(self, code=1000):
        """The client went away: ``websocket.disconnect``."""
        self.order += 1
        return self._send("websocket.disconnect", {"code": code, "order": self.order})

    @defer.inlineCallbacks
    def close_and_leave(self, group):
        """Close, and fire once the disconnect consumer has taken this socket out of ``group``."""
        yield self.close()
        while True:
            left = yield self.harness.layer.discarded.get().addTimeout(TIMEOUT, reactor)
            if left == (group, self.reply_channel):
                return

    def receive(self):
        """Fires with the next message sent to this socket's reply channel."""
        return self.harness.queue(self.reply_channel).get().addTimeout(TIMEOUT, reactor)


class DocsHarness:
    """
    A ``WorkerService`` running ``routing`` over a fresh in-memory layer
    registered as ``default``, plus the interface server's side: one receive
    loop on a process-specific prefix handing replies to ``FakeSocket``s.

    ``threads=1`` makes the worker run one consumer at a time.
    """

    def __init__(self, testcase, routing, threads=1):
        from chanserve.worker import WorkerService
        self.layer = ObservedLayer(reactor=reactor)
        self.layer.startService()
        testcase.addCleanup(self.layer.stopService)
        previous = channel_layers._layers.get("default")
        channel_layers.register("default", self.layer)
        testcase.addCleanup(
            lambda: channel_layers.register("default", previous) if previous is not None
            else channel_layers.unregister("default"))
        self.prefix = f"chanserve.docs{secrets.token_hex(4)}!"
        self._queues = {}
        self.worker = WorkerService(self.layer, reactor, routing, threads=threads)
        self.worker.startService()
        testcase.addCleanup(self.worker.stopService)
        pump = defer.Deferred.fromCoroutine(self._pump())
        pump.addErrback(lambda f: f.trap(defer.CancelledError))
        testcase.addCleanup(pump.cancel)

    def queue(self, channel):
        return self._queues.setdefault(channel, defer.DeferredQueue())

    async def _pump(self):
        while True:
            channel, message = await self.layer.receive([self.prefix])
            self.queue(channel).put(message)

    def socket(self, path="/", headers=()):
        return FakeSocket(self, path, headers)

    @defer.inlineCallbacks
    def http(self, path, method="GET", body=b""):
        """Send an ``http.request``; fires with ``(status, headers, body)`` once the response ends."""
        reply = FakeSocket(self, path).reply_channel
        yield self.layer.send("http.request", {
            "reply_channel": reply, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "root_path": "", "query_string": b"", "headers": [[b"host", b"testserver"]],
            "body": body, "client": ["127.0.0.1", 50000], "server": ["127.0.0.1", 8000],
        })
        first = yield self.queue(reply).get().addTimeout(TIMEOUT, reactor)
        chunks = [first.get("content", b"")]
        last = first
        while last.get("more_content", False):
            last = yield self.queue(reply).get().addTimeout(TIMEOUT, reactor)
            chunks.append(last.get("content", b""))
        return first["status"], first.get("headers", []), b"".join(chunks)


def login_cookie(username):
    """A logged-in Django session for a (new) user ``username``: the ``cookie`` header that carries it."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from tests.project import ensure_database
    ensure_database()
    user, _ = get_user_model().objects.get_or_create(username=username)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return [b"cookie", f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode()]


class GettingStartedTests(unittest.TestCase):
    """Each step of docs/getting-started.rst, run as the text says it behaves."""

    def setUp(self):
        use_docs_examples(self)

    @defer.inlineCallbacks
    def test_hello_world(self):
        """The first consumer answers every HTTP request with "Hello world! You asked for <path>"."""
        harness = DocsHarness(self, example("hello.routing").channel_routing)
        status, headers, body = yield harness.http("/some/path/")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"Hello world! You asked for /some/path/")

    @defer.inlineCallbacks
    def test_echo(self):
        """The echo consumer sends each text frame back to its sender only."""
        harness = DocsHarness(self, example("echo.routing").channel_routing)
        a, b = harness.socket("/chat/"), harness.socket("/chat/")
        self.assertEqual((yield a.connect()), {"accept": True})
        self.assertEqual((yield b.connect()), {"accept": True})
        yield a.send("hello world")
        self.assertEqual((yield a.receive()), {"text": "hello world"})
        yield b.send("other")
        self.assertEqual((yield b.receive()), {"text": "other"})
        self.assertEqual(harness.queue(a.reply_channel).pending, [])

    @defer.inlineCallbacks
    def test_groups(self):
        """The group chat sends "[user] <text>" to every connected socket, and forgets closed ones."""
        harness = DocsHarness(self, example("groups.routing").channel_routing)
        a, b, c = (harness.socket("/chat/") for _ in range(3))
        for s in (a, b, c):
            yield s.connect()
        yield a.send("hello world")
        for s in (a, b, c):
            self.assertEqual((yield s.receive()), {"text": "[user] hello world"})
        yield c.close_and_leave("chat")
        yield b.send("bye")
        for s in (a, b):
            self.assertEqual((yield s.receive()), {"text": "[user] bye"})
        self.assertEqual(sorted((yield harness.layer.group_channels("chat"))),
                         sorted([a.reply_channel, b.reply_channel]))

    @defer.inlineCallbacks
    def test_rooms_with_channel_session(self):
        """Persisting Data: the room comes from the connect path and is kept in the channel session."""
        from tests.project import ensure_database
        ensure_database()
        harness = DocsHarness(self, example("rooms.routing").channel_routing)
        red, red2, blue = harness.socket("/red/"), harness.socket("/red/"), harness.socket("/blue/")
        for s in (red, red2, blue):
            yield s.connect()
        yield red.send("hi red")
        for s in (red, red2):
            reply = yield s.receive()
            self.assertEqual(reply["text"], "hi red")
        yield blue.send("hi blue")
        self.assertEqual((yield blue.receive())["text"], "hi blue")
        self.assertEqual(harness.queue(red.reply_channel).pending, [])
        yield red2.close_and_leave("chat-red")
        yield blue.close_and_leave("chat-blue")
        yield red.send("alone")
        self.assertEqual((yield red.receive())["text"], "alone")
        self.assertEqual((yield harness.layer.group_channels("chat-red")), [red.reply_channel])

    @defer.inlineCallbacks
    def test_first_letter_auth_chat(self):
        """Authentication: users chat with users whose username starts with the same letter."""
        harness = DocsHarness(self, example("auth_chat.routing").channel_routing)
        alice = harness.socket("/", [login_cookie("alice")])
        adam = harness.socket("/", [login_cookie("adam")])
        bob = harness.socket("/", [login_cookie("bob")])
        for s in (alice, adam, bob):
            yield s.connect()
        yield alice.send("hello a-people")
        for s in (alice, adam):
            self.assertEqual((yield s.receive())["text"], "hello a-people")
        yield bob.send("only me")
        self.assertEqual((yield bob.receive())["text"], "only me")
        self.assertEqual(harness.queue(alice.reply_channel).pending, [])
        self.assertEqual(sorted((yield harness.layer.group_channels("chat-a"))),
                         sorted([alice.reply_channel, adam.reply_channel]))

    @defer.inlineCallbacks
    def test_routing_include(self):
        """Routing: includes join paths, named groups become kwargs, methods filter, the rest falls through."""
        routing = example("routing_demo.routing").routing
        router = Router(routing)
        consumer, kwargs = router.match("websocket.connect", {"path": "/chat/lobby/"})
        self.assertEqual((consumer.__name__, kwargs), ("chat_connect", {"room": "lobby"}))
        self.assertEqual(router.match("http.request", {"path": "/poll/", "method": "GET"})[0].__name__,
                         "view_consumer")
        harness = DocsHarness(self, routing)
        status, headers, body = yield harness.http("/poll/", method="POST", body=b"x=1")
        self.assertEqual((status, body), (200, b"poll: x=1"))
        lobby = harness.socket("/chat/lobby/")
        yield lobby.connect()
        self.assertEqual((yield harness.layer.group_channels("chat-lobby")), [lobby.reply_channel])

    @defer.inlineCallbacks
    def test_route_kwargs_consumer(self):
        """The routing section's ``ws_add(message, room)`` joins the room named in the path."""
        from chanserve.routing import route
        consumers = example("routing_demo.consumers")
        harness = DocsHarness(self, [route("websocket.connect", consumers.ws_add,
                                           path=r"^/chat/(?P<room>[a-zA-Z0-9_]+)/$")])
        s = harness.socket("/chat/games/", [login_cookie("gina")])
        yield s.connect()
        self.assertEqual((yield harness.layer.group_channels("chat-games")), [s.reply_channel])

    @defer.inlineCallbacks
    def test_models(self):
        """Models: messages go through chat-messages, are saved as ChatMessage and broadcast."""
        from django.db import connection

        from tests.project import ensure_database
        ensure_database()
        installed = override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "myproject.models_chat"])
        installed.enable()
        self.addCleanup(installed.disable)
        ChatMessage = example("models_chat.models").ChatMessage
        with connection.schema_editor() as editor:
            editor.create_model(ChatMessage)

        def drop():
            with connection.schema_editor() as editor:
                editor.delete_model(ChatMessage)
        self.addCleanup(drop)
        harness = DocsHarness(self, example("models_chat.routing").channel_routing)
        a, b = harness.socket("/lobby/"), harness.socket("/lobby/")
        yield a.connect()
        yield b.connect()
        yield a.send("saved and sent")
        for s in (a, b):
            self.assertEqual((yield s.receive()), {"text": "saved and sent"})
        self.assertEqual(list(ChatMessage.objects.values_list("room", "message")),
                         [("lobby", "saved and sent")])

    @defer.inlineCallbacks
    def test_slight_ordering(self):
        """Enforcing Ordering (slight): with 4 threads, every receive sees the user the connect stored."""
        harness = DocsHarness(self, example("ordering.routing").channel_routing, threads=4)
        sockets = [harness.socket("/", [login_cookie(name)]) for name in ("carol", "chris")]
        for s in sockets:
            yield s.connect()
        for i in range(10):
            yield sockets[0].send(f"m{i}")
        texts = []
        for _ in range(10):
            for s in sockets:
                texts.append((s.reply_channel, (yield s.receive())["text"]))
        for s in sockets:
            self.assertEqual(sorted(t for c, t in texts if c == s.reply_channel),
                             sorted(f"m{i}" for i in range(10)))

    @defer.inlineCallbacks
    def test_strict_ordering(self):
        """
        Enforcing Ordering (strict): 30 messages sent back to back to 4 worker
        threads are consumed strictly in order: each consumer sees, in the
        channel session, exactly the messages before it.
        """
        from tests.project import ensure_database
        ensure_database()
        harness = DocsHarness(self, example("ordering.routing").channel_routing, threads=4)
        s = harness.socket("/strict/")
        yield s.connect()
        for i in range(30):
            yield s.send(f"m{i}")
        received = []
        for _ in range(30):
            received.append((yield s.receive())["text"])
        expected = [" ".join(str(i) for i in range(1, n + 1)) for n in range(1, 31)]
        self.assertEqual(sorted(received, key=len), expected)


class ConsumerKindsTests(unittest.TestCase):
    """docs/concepts.rst "Where a consumer runs": each kind runs where the text says."""

    def setUp(self):
        use_docs_examples(self)

    @defer.inlineCallbacks
    def test_where_each_kind_runs(self):
        """Plain functions run in the thread pool; the four reactor kinds on the reactor."""
        from chanserve.worker import runs_on_reactor
        consumers = example("kinds.consumers")
        expected = {
            "/plain/": (consumers.plain, "thread pool"),
            "/coroutine/": (consumers.coroutine, "reactor"),
            "/inline/": (consumers.inline_callbacks, "reactor"),
            "/annotated/": (consumers.annotated, "reactor"),
            "/marked/": (consumers.marked, "reactor"),
        }
        harness = DocsHarness(self, example("kinds.routing").channel_routing)
        for path, (consumer, place) in expected.items():
            self.assertEqual(runs_on_reactor(consumer), place == "reactor", path)
            s = harness.socket(path)
            yield s.connect()
            yield s.send("where?")
            self.assertEqual((yield s.receive()), {"text": place}, path)

    @defer.inlineCallbacks
    def test_flush_held_sends_decorator(self):
        """The decorator's flush_held_sends() delivers the consumer's reply before its immediate "done"."""
        from chanserve.worker import runs_on_reactor
        decorators = example("kinds.decorators")
        self.assertFalse(runs_on_reactor(decorators.replies_then_done))
        harness = DocsHarness(self, example("kinds.routing").channel_routing)
        s = harness.socket("/done/")
        yield s.connect()
        yield s.send("go")
        self.assertEqual([(yield s.receive()), (yield s.receive())],
                         [{"text": "reply"}, {"text": "done"}])


class TestingExampleTests(unittest.SynchronousTestCase):
    """The sample test case of docs/testing.rst passes (and so ConsumerClient does what it says)."""

    def test_sample_tests_pass(self):
        """Running ``myproject/groups/tests.py`` with unittest reports success."""
        import io
        import unittest as pyunittest
        use_docs_examples(self)
        suite = pyunittest.defaultTestLoader.loadTestsFromModule(example("groups.tests"))
        self.assertEqual(suite.countTestCases(), 1)
        out = io.StringIO()
        result = pyunittest.TextTestRunner(stream=out, verbosity=2).run(suite)
        self.assertTrue(result.wasSuccessful(), out.getvalue())


class SettingsExamplesTests(unittest.TestCase):
    """The settings blocks of the docs name real backends and routings."""

    def setUp(self):
        use_docs_examples(self)

    def check(self, name, build):
        module = example(name)
        with override_settings(CHANNEL_LAYERS=module.CHANNEL_LAYERS):
            router = load_routing("default")
            self.assertTrue(router.channels)
            layer = build_channel_layer("default", reactor) if build else None
        return layer

    def test_inmemory(self):
        """The in-memory settings build an in-memory layer and load their routing."""
        self.assertIsInstance(self.check("settings_inmemory", True), InMemoryChannelLayer)

    def test_seed_backend_name(self):
        """The seed's ``asgiref.inmemory.ChannelLayer`` still names the in-memory layer."""
        self.assertIsInstance(self.check("settings_seed", True), InMemoryChannelLayer)

    def test_redis(self):
        """The Redis settings name the Redis layer class and load their routing."""
        from chanserve.layers import RedisChannelLayer
        module = example("settings_redis")
        self.assertEqual(module.CHANNEL_LAYERS["default"]["BACKEND"], "chanserve.layers.RedisChannelLayer")
        self.assertTrue(callable(RedisChannelLayer))
        self.check("settings_redis", False)


def read_doc(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


class ReferenceTests(unittest.SynchronousTestCase):
    """The reference documents everything users can set."""

    def test_every_twistd_option(self):
        """Every ``twistd chanserve`` option (flags, parameters, repeatable ones) is in reference.rst."""
        from chanserve.tap import Options
        options = Options()
        names = {flag[0] for flag in options.optFlags} | {p[0] for p in options.optParameters}
        names |= {name[len("opt_"):].replace("_", "-") for name in dir(options)
                  if name.startswith("opt_") and name not in ("opt_help", "opt_version")}
        text = read_doc("reference.rst")
        missing = sorted(n for n in names if f"--{n}" not in text)
        self.assertEqual(missing, [])

    def test_every_management_command_option(self):
        """Every option of ``runserver`` and ``runworker`` is in reference.rst."""
        from django.core.management import load_command_class
        text = read_doc("reference.rst")
        missing = []
        for name in ("runserver", "runworker"):
            parser = load_command_class("chanserve", name).create_parser("manage.py", name)
            options = {o for action in parser._actions for o in action.option_strings
                       if o.startswith("--") and o not in ("--help", "--version")}
            self.assertIn("--threads", options)
            missing += [f"{name} {o}" for o in sorted(options) if f"``{o}" not in text and f" {o}" not in text]
        self.assertEqual(missing, [])

    def test_every_message_key(self):
        """Every message key of the contract's section 4 appears in the reference's message formats."""
        text = read_doc("reference.rst")
        keys = ["reply_channel", "http_version", "method", "scheme", "path", "root_path",
                "query_string", "headers", "body", "body_channel", "client", "server", "status",
                "content", "more_content", "closed", "order", "text", "bytes", "close", "accept", "code"]
        self.assertEqual([k for k in keys if f"``{k}``" not in text], [])

    def test_every_system_check(self):
        """Every check id chanserve.checks can report is listed in reference.rst."""
        import chanserve.checks
        with open(chanserve.checks.__file__, encoding="utf-8") as f:
            source = f.read()
        found = set(re.findall(r'id="(chanserve\.[EW]\d{3})"', source))
        self.assertGreaterEqual(len(found), 6)
        text = read_doc("reference.rst")
        self.assertEqual(sorted(i for i in found if f"``{i}``" not in text), [])

    def test_numbers_match_the_code(self):
        """The defaults the docs quote (timeouts, chunk size, reply retry time) are the code's."""
        from chanserve import handler, sessions
        concepts, reference = read_doc("concepts.rst"), read_doc("reference.rst")
        retry = f"about {sum(handler._SEND_RETRY_DELAYS):.1f} seconds per message"
        self.assertIn(retry, concepts)
        body_timeout = f"``AsgiRequest.body_receive_timeout`` seconds ({handler.AsgiRequest.body_receive_timeout})"
        self.assertIn(body_timeout, concepts)
        chunk = f"``AsgiHandler.chunk_size`` bytes ({handler.AsgiHandler.chunk_size // 1024} KiB)"
        self.assertIn(chunk, concepts)
        self.assertIn(f"{sessions.DEFAULT_ORDERING_TIMEOUT:g} seconds by default", concepts)
        self.assertIn(f"(default {sessions.DEFAULT_ORDERING_TIMEOUT:g};", reference)
        words = ["no", "one", "two", "three", "four", "five"]
        self.assertIn(f"at most {words[sessions._CHAIN_WAITS]} timeouts", concepts)

    def test_getting_started_includes_tested_files(self):
        """Every code block of getting-started.rst is a literalinclude of a file that exists."""
        text = read_doc("getting-started.rst")
        self.assertNotIn("::\n\n    ", text.replace(".. code-block::", ""))
        included = re.findall(r"\.\. literalinclude:: (\S+)", text)
        self.assertGreater(len(included), 10)
        for path in included:
            self.assertTrue(os.path.exists(os.path.normpath(os.path.join(DOCS, path))), path)


class SphinxBuildTests(unittest.TestCase):
    """The docs build with Sphinx, warnings as errors (what ``make docs`` and CI run)."""

    def test_build(self):
        """``sphinx-build -W --keep-going`` succeeds and writes every page."""
        out = tempfile.mkdtemp(prefix="chanserve-docs-")
        self.addCleanup(shutil.rmtree, out, True)
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
             "-d", os.path.join(out, "doctrees"), DOCS, os.path.join(out, "html")],
            capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        for page in ("index", "getting-started", "concepts", "deploying", "testing", "reference",
                     "migrating"):
            self.assertTrue(os.path.exists(os.path.join(out, "html", page + ".html")), page)
