"""message.user: Django authentication in consumers (http_session_user, channel_session_user...)."""

import secrets

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AnonymousUser, User
from django.test import Client
from twisted.internet import defer, task
from twisted.trial import unittest

from chanserve import Group
from chanserve.auth import (
    channel_and_http_session_user_from_http,
    channel_session_user,
    channel_session_user_from_http,
    http_session_user,
    transfer_user,
)
from chanserve.layers import InMemoryChannelLayer
from chanserve.sessions import session_for_reply_channel
from tests.project import auth_chat, ensure_database
from tests.test_ordering import drain
from tests.test_sessions import (
    connect_message,
    disconnect_message,
    receive_message,
    settle,
    use_default_layer,
    use_settings,
)

PASSWORD = "correct horse battery staple"


def make_user(first_letter):
    """A new user whose username starts with ``first_letter``."""
    return User.objects.create_user(first_letter + secrets.token_hex(6), password=PASSWORD)


def login_cookie(user):
    """Log ``user`` in through a normal Django view; the session id from its cookie."""
    client = Client()
    response = client.post("/auth/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 200, response.content
    return client.cookies["sessionid"].value


class AuthTestsMixin:
    def setUp(self):
        ensure_database()
        # A fast hasher: the tests make many users and logins.
        use_settings(self, ROOT_URLCONF="tests.project.auth_urls",
                     PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
        self.layer = InMemoryChannelLayer(reactor=task.Clock())
        use_default_layer(self, self.layer)

    def connect_with_cookie(self, session_key, path="/chat/"):
        return connect_message(self.layer, path=path, headers=[
            (b"host", b"example.com"), (b"cookie", b"sessionid=" + session_key.encode())])

    def group_members(self, name):
        return sorted(settle(Group(name).channels()))

    def received(self, reply):
        """Texts queued for ``reply`` (a name under ``chanserve.test!``)."""
        out = []
        while True:
            d = self.layer.receive(["chanserve.test!"])
            if not d.called:
                d.addErrback(lambda f: f.trap(defer.CancelledError))
                d.cancel()
                return [content.get("text") for channel, content in out if channel == reply]
            d.addCallback(out.append)


class HttpSessionUserTests(AuthTestsMixin, unittest.SynchronousTestCase):
    """http_session_user: message.user from the visitor's HTTP session."""

    def setUp(self):
        super().setUp()
        self.users = []

        @http_session_user
        def consumer(message):
            self.users.append(message.user)
        self.consumer = consumer

    def test_logged_in_user(self):
        """After a login through a Django view, the cookie on the handshake gives the user."""
        user = make_user("a")
        self.consumer(self.connect_with_cookie(login_cookie(user)))
        self.assertEqual(self.users[0], user)
        self.assertTrue(self.users[0].is_authenticated)

    def test_anonymous_without_session(self):
        """No cookie, or an unknown session: an AnonymousUser."""
        self.consumer(connect_message(self.layer))
        self.consumer(self.connect_with_cookie("nosuchsession" * 2))
        self.assertEqual([type(u) for u in self.users], [AnonymousUser, AnonymousUser])

    def test_query_string_session_key(self):
        """The session_key query parameter logs in a socket on another port (no cookie)."""
        user = make_user("q")
        key = login_cookie(user)
        self.consumer(connect_message(self.layer, query=b"session_key=" + key.encode()))
        self.assertEqual(self.users[0], user)

    def test_logged_out(self):
        """After logging out through a view, the old cookie gives an AnonymousUser."""
        user = make_user("o")
        client = Client()
        client.post("/auth/login/", {"username": user.username, "password": PASSWORD})
        key = client.cookies["sessionid"].value
        client.post("/auth/logout/")
        self.consumer(self.connect_with_cookie(key))
        self.assertIsInstance(self.users[0], AnonymousUser)


class ChannelSessionUserTests(AuthTestsMixin, unittest.SynchronousTestCase):
    """The login moves into the channel session at connect; later messages know the user."""

    def test_from_http_then_channel(self):
        """channel_session_user_from_http on connect, channel_session_user on receive: same user."""
        user = make_user("c")
        users = []

        @channel_session_user_from_http
        def connect(message):
            users.append(message.user)

        @channel_session_user
        def receive(message):
            users.append(message.user)
        message = self.connect_with_cookie(login_cookie(user))
        connect(message)
        receive(receive_message(self.layer, message.reply_channel.name))
        self.assertEqual(users, [user, user])
        session = session_for_reply_channel(message.reply_channel)
        self.assertEqual(session[SESSION_KEY], str(user.pk))

    def test_channel_and_http_session_user_from_http(self):
        """The combined decorator gives the user and keeps the HTTP session for later messages."""
        user = make_user("h")
        seen = []

        @channel_and_http_session_user_from_http
        def connect(message):
            message.http_session["visits"] = 1
            seen.append(message.user)

        @channel_session_user
        def receive(message):
            seen.append(message.user)
        key = login_cookie(user)
        message = self.connect_with_cookie(key)
        connect(message)
        receive(receive_message(self.layer, message.reply_channel.name))
        self.assertEqual(seen, [user, user])
        from django.contrib.sessions.backends.db import SessionStore
        self.assertEqual(SessionStore(key)["visits"], 1)

    def test_anonymous_connect(self):
        """An anonymous handshake leaves later messages anonymous."""
        users = []

        @channel_session_user_from_http
        def connect(message):
            users.append(message.user)

        @channel_session_user
        def receive(message):
            users.append(message.user)
        message = connect_message(self.layer)
        connect(message)
        receive(receive_message(self.layer, message.reply_channel.name))
        self.assertEqual([u.is_authenticated for u in users], [False, False])

    def test_password_change_logs_socket_out(self):
        """A changed password invalidates the login held in the channel session."""
        user = make_user("p")
        users = []

        @channel_session_user
        def receive(message):
            users.append(message.user)
        message = self.connect_with_cookie(login_cookie(user))
        auth_chat.ws_add(message)
        user.set_password("another password entirely")
        user.save()
        receive(receive_message(self.layer, message.reply_channel.name))
        self.assertIsInstance(users[0], AnonymousUser)

    def test_seed_first_letter_chat(self):
        """The seed's first-letter chat, verbatim: alice and adam talk, bob doesn't hear."""
        alice, adam, bob = make_user("a"), make_user("a"), make_user("b")
        sockets = {}
        for user in (alice, adam, bob):
            message = self.connect_with_cookie(login_cookie(user))
            auth_chat.ws_add(message)
            sockets[user.username] = message.reply_channel.name
        self.assertEqual(self.group_members("chat-a"),
                         sorted([sockets[alice.username], sockets[adam.username]]))
        self.assertEqual(self.group_members("chat-b"), [sockets[bob.username]])
        auth_chat.ws_message(receive_message(self.layer, sockets[alice.username], "hello a"))
        self.assertEqual(self.received(sockets[adam.username]), ["hello a"])
        auth_chat.ws_message(receive_message(self.layer, sockets[alice.username], "again"))
        self.assertEqual(self.received(sockets[bob.username]), [])
        auth_chat.ws_disconnect(disconnect_message(self.layer, sockets[adam.username]))
        self.assertEqual(self.group_members("chat-a"), [sockets[alice.username]])

    def test_seed_ordered_chat(self):
        """The seed's slight-ordering chat: a receive arriving before connect still has the user."""
        alice = make_user("a")
        message = self.connect_with_cookie(login_cookie(alice))
        reply = message.reply_channel.name
        auth_chat.ordered_ws_message(receive_message(self.layer, reply, "early"))
        self.assertEqual(self.group_members("chat-a"), [])
        auth_chat.ordered_ws_add(message)

        def route(message):
            return auth_chat.ordered_ws_message(message)
        drain(self.layer, route)
        self.assertEqual(self.received(reply), ["early"])


class TransferUserTests(unittest.SynchronousTestCase):
    """transfer_user copies a login between sessions."""

    def test_copies_login(self):
        """The user id, backend and hash are copied."""
        source = {SESSION_KEY: "7", BACKEND_SESSION_KEY: "b", HASH_SESSION_KEY: "h", "other": 1}
        target = {}
        transfer_user(source, target)
        self.assertEqual(target, {SESSION_KEY: "7", BACKEND_SESSION_KEY: "b",
                                  HASH_SESSION_KEY: "h"})

    def test_anonymous_clears_stale_login(self):
        """From an anonymous (or missing) session, a login left in the target is removed."""
        target = {SESSION_KEY: "7", BACKEND_SESSION_KEY: "b", HASH_SESSION_KEY: "h", "room": "x"}
        transfer_user({}, target)
        self.assertEqual(target, {"room": "x"})
        target[SESSION_KEY] = "8"
        transfer_user(None, target)
        self.assertEqual(target, {"room": "x"})


class AsyncConsumersRefusedTests(unittest.SynchronousTestCase):
    """The session and auth decorators refuse async def consumers when they decorate them."""

    def test_refused(self):
        """Each decorator raises TypeError naming itself for an async def consumer."""
        from chanserve import auth, sessions

        async def consumer(message):
            pass

        for decorator in (auth.http_session_user, auth.channel_session_user,
                          auth.channel_session_user_from_http,
                          auth.channel_and_http_session_user_from_http,
                          sessions.channel_and_http_session, sessions.channel_session,
                          sessions.http_session):
            with self.assertRaises(TypeError, msg=decorator.__name__) as e:
                decorator(consumer)
            self.assertIn(decorator.__name__, str(e.exception))
