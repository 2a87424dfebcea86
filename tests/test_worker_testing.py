"""Tests for ``chanserve.testing.ConsumerClient`` (the fake is tested like the real thing)."""

from django.test import override_settings
from twisted.trial.unittest import SynchronousTestCase

from chanserve import Channel
from chanserve.exceptions import ConsumeLater
from chanserve.layers import get_channel_layer
from chanserve.routing import route
from chanserve.testing import ConsumerClient
from tests.project import seed_chat, seed_echo

SEED = {"default": {"BACKEND": "chanserve.layers.InMemoryChannelLayer",
                    "ROUTING": "tests.project.seed_routing.channel_routing"}}


class ConsumerClientTests(SynchronousTestCase):
    """The client runs consumers through routing and the worker's dispatch, synchronously."""

    def test_project_routing_and_hello_world(self):
        """Without a routing the project's is used; the seed's HTTP consumer answers."""
        with override_settings(CHANNEL_LAYERS=SEED), ConsumerClient() as client:
            self.assertTrue(client.send_and_consume("http.request", {"path": "/hello/x", "method": "GET"}))
            reply = client.receive()
        self.assertEqual(reply["status"], 200)
        self.assertEqual(reply["content"], b"Hello world! You asked for /hello/x")

    def test_echo(self):
        """The seed's echo consumer replies on the client's reply channel."""
        with ConsumerClient([route("websocket.receive", seed_echo.ws_message)]) as client:
            client.send_and_consume("websocket.receive", {"path": "/", "text": "hi"})
            self.assertEqual(client.replies(), [{"text": "hi"}])

    def test_group_chat_and_implicit_accept(self):
        """The seed's chat: connect is accepted implicitly, and group sends reach the client."""
        routing = [route("websocket.connect", seed_chat.ws_add),
                   route("websocket.receive", seed_chat.ws_message)]
        with ConsumerClient(routing) as client:
            client.send_and_consume("websocket.connect", {"path": "/", "order": 0})
            self.assertEqual(client.receive(), {"accept": True})
            client.send_and_consume("websocket.receive", {"path": "/", "text": "yo", "order": 1})
            self.assertEqual(client.receive(), {"text": "[user] yo"})
            self.assertIsNone(client.receive())

    def test_install_restores_layers(self):
        """Inside the block ``Channel`` uses the client's layer; afterwards the previous one."""
        before = get_channel_layer("default")
        with ConsumerClient([]) as client:
            self.assertIs(Channel("x").channel_layer, client.layer)
        self.assertIs(get_channel_layer("default"), before)

    def test_consume_all_follows_chains(self):
        """Messages consumers send to other routed channels are consumed by ``consume_all``."""
        def first(message):
            Channel("second").send({"n": message.content["n"] + 1})

        def second(message):
            Channel("done").send({"n": message.content["n"]})

        with ConsumerClient([route("first", first), route("second", second)]) as client:
            client.send("first", {"n": 1})
            self.assertEqual(client.consume_all(), 2)
            self.assertFalse(client.consume())
            self.assertEqual(client.receive("done"), {"n": 2})

    def test_consume_later_needs_time(self):
        """A ConsumeLater message comes back once the client's clock passed the retry delay."""
        attempts = []

        def flaky(message):
            attempts.append(1)
            if len(attempts) == 1:
                raise ConsumeLater()

        with ConsumerClient([route("x", flaky)]) as client:
            client.send_and_consume("x", {})
            self.assertFalse(client.consume())
            client.advance(1)
            self.assertTrue(client.consume())
        self.assertEqual(len(attempts), 2)
        self.assertEqual(client.statistics()["consumed"], 1)

    def test_errors_become_replies(self):
        """A failing HTTP consumer gives the client the worker's 500 (and the error is logged)."""
        def broken(message):
            raise ValueError("nope")

        with ConsumerClient([route("http.request", broken)]) as client:
            client.send_and_consume("http.request", {"path": "/", "method": "GET"})
            self.assertEqual(client.receive()["status"], 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_nothing_to_consume(self):
        """``consume`` with nothing waiting returns False and leaves no pending receive."""
        client = ConsumerClient([route("x", lambda m: None)], defaults=False)
        self.assertFalse(client.consume())
        self.assertFalse(client.consume("x"))
        stats = client.layer.statistics()
        self.assertEqual(self.successResultOf(stats)["waiting_receivers"], 0)
