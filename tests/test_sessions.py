"""channel_session and http_session: Django sessions for consumers."""

import os
import threading
from datetime import timedelta
from importlib import import_module

from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone
from twisted.internet import defer, task, threads
from twisted.python import failure
from twisted.trial import unittest

from chanserve import Group
from chanserve.channel import Message
from chanserve.layers import InMemoryChannelLayer, channel_layers
from chanserve.layers._validation import new_channel_name
from chanserve.sessions import (
    channel_and_http_session,
    channel_session,
    channel_session_key,
    get_channel_session_engine,
    http_session,
    session_for_reply_channel,
)
from tests.project import ensure_database


def use_settings(testcase, **kwargs):
    """Override Django settings for the rest of one test."""
    override = override_settings(**kwargs)
    override.enable()
    testcase.addCleanup(override.disable)


def use_default_layer(testcase, layer):
    """Make ``layer`` the process's default layer for one test (Group("x") uses it)."""
    old = channel_layers._layers.get("default")
    channel_layers.register("default", layer)

    def restore():
        if old is None:
            channel_layers.unregister("default")
        else:
            channel_layers.register("default", old)
    testcase.addCleanup(restore)


def settle(result):
    """The value of a Channel/Group call: a Deferred on the reactor thread, else the value."""
    if isinstance(result, defer.Deferred):
        box = []
        result.addBoth(box.append)
        if isinstance(box[0], failure.Failure):
            box[0].raiseException()
        return box[0]
    return result


def db_session_exists(key):
    return Session.objects.filter(session_key=key).exists()


def connect_message(layer, reply=None, path="/room1/", headers=(), query=b"", order=0):
    content = {
        "reply_channel": reply or new_channel_name("chanserve.test!"),
        "path": path, "query_string": query, "headers": [list(h) for h in headers],
        "order": order,
    }
    return Message(content, "websocket.connect", layer)


def receive_message(layer, reply, text="hi", order=1):
    return Message({"reply_channel": reply, "path": "/room1/", "text": text, "order": order},
                   "websocket.receive", layer)


def disconnect_message(layer, reply, order=2):
    return Message({"reply_channel": reply, "path": "/room1/", "code": 1000, "order": order},
                   "websocket.disconnect", layer)


# The seed's "Persisting Data" consumers, verbatim but for the package name.
@channel_session
def ws_connect(message):
    # Work out room name from path (ignore slashes)
    room = message.content['path'].strip("/")
    # Save room in session and add us to the group
    message.channel_session['room'] = room
    Group("chat-%s" % room).add(message.reply_channel)


@channel_session
def ws_message(message):
    Group("chat-%s" % message.channel_session['room']).send(message.content)


@channel_session
def ws_disconnect(message):
    Group("chat-%s" % message.channel_session['room']).discard(message.reply_channel)


class ChannelSessionTests(unittest.SynchronousTestCase):
    """message.channel_session: a Django session per reply channel."""

    def setUp(self):
        ensure_database()
        self.clock = task.Clock()
        self.layer = InMemoryChannelLayer(reactor=self.clock)
        use_default_layer(self, self.layer)

    def test_key_is_digest_of_reply_channel(self):
        """The key is a fixed-size digest of the reply channel name, distinct per channel."""
        a = new_channel_name("chanserve.p!")
        b = new_channel_name("chanserve.p!")
        self.assertEqual(channel_session_key(a), channel_session_key(a))
        self.assertNotEqual(channel_session_key(a), channel_session_key(b))
        self.assertNotIn(a.split("!")[1], channel_session_key(a))
        self.assertLessEqual(len(channel_session_key(a)), 40)
        self.assertRegex(channel_session_key(a), r"^[a-z0-9]+$")

    def test_seed_chat_persists_room(self):
        """The seed's connect/receive/disconnect consumers keep the room between messages."""
        connect = connect_message(self.layer, path="/lobby/")
        reply = connect.reply_channel.name
        ws_connect(connect)
        self.assertEqual(settle(Group("chat-lobby").channels()), [reply])
        ws_message(receive_message(self.layer, reply, "hello"))
        self.assertEqual(self.successResultOf(self.layer.receive(["chanserve.test!"])),
                         (reply, {"reply_channel": reply, "path": "/room1/", "text": "hello",
                                  "order": 1}))
        ws_disconnect(disconnect_message(self.layer, reply))
        self.assertEqual(settle(Group("chat-lobby").channels()), [])

    def test_session_stays_on_message(self):
        """After the consumer, message.channel_session is still there to inspect."""
        message = connect_message(self.layer, path="/kept/")
        ws_connect(message)
        self.assertEqual(message.channel_session["room"], "kept")

    def test_saved_only_when_modified(self):
        """A consumer that only reads the session creates no record."""
        message = connect_message(self.layer)

        @channel_session
        def reader(message):
            self.assertEqual(message.channel_session.get("room"), None)
        reader(message)
        self.assertFalse(db_session_exists(channel_session_key(message.reply_channel)))

    def test_not_saved_when_consumer_raises(self):
        """Changes made by a consumer that raises are not saved."""
        message = connect_message(self.layer)

        @channel_session
        def broken(message):
            message.channel_session["room"] = "x"
            raise RuntimeError("boom")
        self.assertRaises(RuntimeError, broken, message)
        self.assertNotIn("room", session_for_reply_channel(message.reply_channel))

    def test_async_consumers_refused(self):
        """The session decorators refuse async def consumers at decoration time."""
        async def consumer(message):
            pass
        for decorator in (channel_session, http_session):
            e = self.assertRaises(TypeError, decorator, consumer)
            self.assertIn("async def", str(e))

    def test_no_reply_channel(self):
        """A message without a reply channel gets a clear ValueError naming the channel."""
        @channel_session
        def consumer(message):
            raise AssertionError("must not run")
        e = self.assertRaises(ValueError, consumer, Message({"a": 1}, "chat-messages", self.layer))
        self.assertIn("reply_channel", str(e))
        self.assertIn("chat-messages", str(e))

    def test_disconnect_removes_session(self):
        """The session of a socket is removed after its disconnect consumer ran."""
        connect = connect_message(self.layer)
        ws_connect(connect)
        key = channel_session_key(connect.reply_channel)
        self.assertTrue(db_session_exists(key))
        seen = []

        @channel_session
        def on_disconnect(message):
            seen.append(message.channel_session["room"])
        on_disconnect(disconnect_message(self.layer, connect.reply_channel.name))
        self.assertEqual(seen, ["room1"])
        self.assertFalse(db_session_exists(key))

    def test_sessions_expire(self):
        """Saved channel sessions carry an expiry date, so clearsessions removes leftovers."""
        connect = connect_message(self.layer)
        ws_connect(connect)
        record = Session.objects.get(session_key=channel_session_key(connect.reply_channel))
        self.assertGreater(record.expire_date, timezone.now())
        Session.objects.filter(pk=record.pk).update(
            expire_date=timezone.now() - timedelta(seconds=1))
        get_channel_session_engine().SessionStore.clear_expired()
        self.assertFalse(db_session_exists(record.pk))

    def test_nested_decorators_share_one_session(self):
        """Stacked channel_session decorators see the same session, saved once by the outermost."""
        seen = []

        @channel_session
        @channel_session
        def consumer(message):
            seen.append(message.channel_session)
            message.channel_session["n"] = 1

        message = connect_message(self.layer)
        consumer(message)
        self.assertEqual(len(seen), 1)
        self.assertEqual(session_for_reply_channel(message.reply_channel)["n"], 1)

    def test_flush_and_cycle_key_keep_the_key(self):
        """flush() empties the session but keeps its key; cycle_key() keeps key and data."""
        message = connect_message(self.layer)
        ws_connect(message)
        key = channel_session_key(message.reply_channel)

        @channel_session
        def cycler(message):
            message.channel_session.cycle_key()
            self.assertEqual(message.channel_session.session_key, key)
            message.channel_session["extra"] = True
        cycler(receive_message(self.layer, message.reply_channel.name))
        session = session_for_reply_channel(message.reply_channel)
        self.assertEqual((session["room"], session["extra"]), ("room1", True))

        @channel_session
        def flusher(message):
            message.channel_session.flush()
            self.assertEqual(message.channel_session.session_key, key)
        flusher(receive_message(self.layer, message.reply_channel.name))
        self.assertFalse(db_session_exists(key))
        self.assertEqual(dict(session_for_reply_channel(message.reply_channel)), {})

    def test_user_save_inside_consumer(self):
        """A consumer may call save() itself on a new channel session; the key stays fixed."""
        message = connect_message(self.layer)

        @channel_session
        def saver(message):
            message.channel_session["a"] = 1
            message.channel_session.save()
            message.channel_session["b"] = 2
        saver(message)
        key = channel_session_key(message.reply_channel)
        self.assertEqual(Session.objects.filter(session_key=key).count(), 1)
        self.assertEqual(dict(session_for_reply_channel(message.reply_channel)), {"a": 1, "b": 2})

    def test_signed_cookies_refused(self):
        """A signed-cookie engine is refused with ImproperlyConfigured naming the setting."""
        use_settings(self, CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
        e = self.assertRaises(ImproperlyConfigured, ws_connect, connect_message(self.layer))
        self.assertIn("CHANNEL_SESSION_ENGINE", str(e))

    def test_signed_cookies_default_refused(self):
        """With no CHANNEL_SESSION_ENGINE, a signed-cookie SESSION_ENGINE is refused too."""
        use_settings(self, SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
        e = self.assertRaises(ImproperlyConfigured, ws_connect, connect_message(self.layer))
        self.assertIn("SESSION_ENGINE", str(e))

    def test_channel_session_engine_setting(self):
        """CHANNEL_SESSION_ENGINE chooses where channel sessions live, not SESSION_ENGINE."""
        use_settings(self, CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.cache")
        message = connect_message(self.layer)
        ws_connect(message)
        key = channel_session_key(message.reply_channel)
        self.assertFalse(db_session_exists(key))
        cache_store = import_module("django.contrib.sessions.backends.cache").SessionStore
        self.assertEqual(cache_store(session_key=key)["room"], "room1")

    def test_file_engine(self):
        """The file engine works too (keys are lowercase letters and digits)."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        use_settings(self, CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.file",
                     SESSION_FILE_PATH=path)
        message = connect_message(self.layer)
        ws_connect(message)
        self.assertEqual(session_for_reply_channel(message.reply_channel)["room"], "room1")


class ChannelSessionThreadTests(unittest.TestCase):
    """Consumers of one socket running at once in several threads."""

    def setUp(self):
        ensure_database()
        from twisted.internet import reactor
        self.layer = InMemoryChannelLayer(reactor=reactor)

    def test_concurrent_first_saves(self):
        """Threads saving a not-yet-stored session at once don't fail; one record results."""
        reply = new_channel_name("chanserve.test!")
        barrier = threading.Barrier(6)
        errors = []

        @channel_session
        def consumer(message):
            message.channel_session["k%d" % message.content["order"]] = True
            barrier.wait(5)

        def run(i):
            try:
                consumer(receive_message(self.layer, reply, order=i))
            except Exception as e:  # recorded, then asserted empty
                errors.append(e)
            finally:
                from django.db import close_old_connections
                close_old_connections()

        ds = [threads.deferToThread(run, i) for i in range(6)]

        def check(_):
            self.assertEqual(errors, [])
            key = channel_session_key(reply)
            self.assertEqual(Session.objects.filter(session_key=key).count(), 1)
            # Last write wins, like request.session; at least one key made it.
            self.assertTrue(any(k.startswith("k") for k in session_for_reply_channel(reply).keys()))
        return defer.gatherResults(ds).addCallback(check)


class HttpSessionTests(unittest.SynchronousTestCase):
    """message.http_session: the visitor's existing Django session, or None."""

    def setUp(self):
        ensure_database()
        self.layer = InMemoryChannelLayer(reactor=task.Clock())
        engine = import_module("django.contrib.sessions.backends.db")
        self.session = engine.SessionStore()
        self.session["colour"] = "blue"
        self.session.create()
        self.seen = []

        @http_session
        def consumer(message):
            self.seen.append(message.http_session)
        self.consumer = consumer

    def run_with(self, headers=(), query=b""):
        self.seen.clear()
        self.consumer(connect_message(self.layer, headers=headers, query=query))
        return self.seen[0]

    def test_from_cookie(self):
        """The sessionid cookie of the connect message names the session."""
        cookie = b"csrftoken=abc; sessionid=" + self.session.session_key.encode()
        session = self.run_with(headers=[(b"cookie", cookie)])
        self.assertEqual(session["colour"], "blue")
        self.assertEqual(session.session_key, self.session.session_key)

    def test_cookie_name_setting(self):
        """SESSION_COOKIE_NAME is honoured."""
        use_settings(self, SESSION_COOKIE_NAME="mysess")
        self.assertIsNone(self.run_with(
            headers=[(b"cookie", b"sessionid=" + self.session.session_key.encode())]))
        session = self.run_with(
            headers=[(b"cookie", b"mysess=" + self.session.session_key.encode())])
        self.assertEqual(session["colour"], "blue")

    def test_several_cookie_headers(self):
        """Cookies split over several Cookie headers are all read."""
        session = self.run_with(headers=[
            (b"cookie", b"a=1"), (b"Cookie", b"sessionid=" + self.session.session_key.encode())])
        self.assertEqual(session["colour"], "blue")

    def test_from_query_string(self):
        """A session_key query parameter names the session (another port, no cookie)."""
        session = self.run_with(query=b"room=x&session_key=" + self.session.session_key.encode())
        self.assertEqual(session["colour"], "blue")

    def test_absent(self):
        """No cookie and no query parameter: http_session is None."""
        self.assertIsNone(self.run_with(headers=[(b"host", b"example.com")]))
        self.consumer(receive_message(self.layer, "chanserve.x!y"))
        self.assertIsNone(self.seen[-1])

    def test_unknown_key_never_creates(self):
        """An unknown key gives None and creates no session (no fixation)."""
        key = "x" * 32
        self.assertIsNone(self.run_with(headers=[(b"cookie", b"sessionid=" + key.encode())]))
        self.assertFalse(db_session_exists(key))

        @http_session
        def writer(message):
            self.assertIsNone(message.http_session)
        writer(connect_message(self.layer, query=b"session_key=" + key.encode()))
        self.assertFalse(db_session_exists(key))

    def test_expired_session_is_none(self):
        """An expired session is not loaded."""
        Session.objects.filter(session_key=self.session.session_key).update(
            expire_date=timezone.now() - timedelta(seconds=1))
        self.assertIsNone(self.run_with(
            headers=[(b"cookie", b"sessionid=" + self.session.session_key.encode())]))

    def test_modified_is_saved(self):
        """Changes a consumer makes to the HTTP session are saved."""
        @http_session
        def writer(message):
            message.http_session["colour"] = "red"
        writer(connect_message(self.layer, headers=[
            (b"cookie", b"sessionid=" + self.session.session_key.encode())]))
        engine = import_module("django.contrib.sessions.backends.db")
        self.assertEqual(engine.SessionStore(self.session.session_key)["colour"], "red")

    def test_channel_and_http_session(self):
        """channel_and_http_session keeps the HTTP session for the socket's later messages."""
        seen = []

        @channel_and_http_session
        def consumer(message):
            seen.append(message.http_session and message.http_session["colour"])
        connect = connect_message(self.layer, headers=[
            (b"cookie", b"sessionid=" + self.session.session_key.encode())])
        consumer(connect)
        consumer(receive_message(self.layer, connect.reply_channel.name))
        self.assertEqual(seen, ["blue", "blue"])


class SessionEngineTests(unittest.SynchronousTestCase):
    """get_channel_session_engine explains an unusable engine with ImproperlyConfigured."""

    def test_engine_without_session_store(self):
        """An engine module with no SessionStore class names the setting and the module."""
        from django.core.exceptions import ImproperlyConfigured

        from chanserve.sessions import get_channel_session_engine
        use_settings(self, CHANNEL_SESSION_ENGINE="chanserve.exceptions")
        with self.assertRaises(ImproperlyConfigured) as e:
            get_channel_session_engine()
        self.assertIn("CHANNEL_SESSION_ENGINE", str(e.exception))
        self.assertIn("chanserve.exceptions", str(e.exception))
