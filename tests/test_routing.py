"""Tests for ``chanserve.routing``: route, route_class, include, Router, load_routing."""

import re

from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from twisted.trial.unittest import SynchronousTestCase

from chanserve import routing
from chanserve.routing import Router, RoutingError, include, route, route_class


def consumer_a(message, **kwargs):
    """A consumer used by routes under test."""


def consumer_b(message, **kwargs):
    """Another consumer used by routes under test."""


class ChatConsumer:
    """A Channels 1.x style class-based consumer."""

    @classmethod
    def channel_names(cls):
        return ["websocket.connect", "websocket.receive"]

    def __init__(self, message, **kwargs):
        self.message = message
        self.kwargs = kwargs


nested_routing = [route("websocket.receive", consumer_b, path=r"^/(?P<room>\w+)/$")]
not_a_list = 42


class RouteTests(SynchronousTestCase):
    """``route`` builds a matcher over message string keys."""

    def test_match_without_filters(self):
        """A route without filters matches any message on its channel, with no kwargs."""
        r = route("http.request", consumer_a)
        self.assertEqual(r.match({"path": "/x"}), (consumer_a, {}))
        self.assertEqual(r.channel_names(), {"http.request"})

    def test_named_groups_become_kwargs(self):
        """Named groups of every filter are merged into the consumer kwargs."""
        r = route("http.request", consumer_a, path=r"^/poll/(?P<poll>\d+)/$", method=r"^(?P<m>POST)$")
        self.assertEqual(r.match({"path": "/poll/12/", "method": "POST"}),
                         (consumer_a, {"poll": "12", "m": "POST"}))

    def test_filter_must_match_every_key(self):
        """A message failing one filter does not match."""
        r = route("http.request", consumer_a, path=r"^/poll/$", method=r"^POST$")
        self.assertIsNone(r.match({"path": "/poll/", "method": "GET"}))

    def test_missing_or_non_string_key_never_matches(self):
        """A filter on a key that is absent or not a str never matches."""
        r = route("x", consumer_a, path=r".*")
        self.assertIsNone(r.match({}))
        self.assertIsNone(r.match({"path": b"/bytes"}))
        self.assertIsNone(r.match({"path": 3}))

    def test_unanchored_filter_searches(self):
        """A filter without ``^`` may match anywhere in the value."""
        r = route("x", consumer_a, path=r"chat")
        self.assertIsNotNone(r.match({"path": "/room/chat/"}))
        self.assertIsNone(route("x", consumer_a, path=r"^chat").match({"path": "/chat"}))

    def test_unnamed_group_refused(self):
        """An unnamed group is a RoutingError naming the pattern."""
        e = self.assertRaises(RoutingError, route, "x", consumer_a, path=r"^/(\d+)/$")
        self.assertIn(repr(r"^/(\d+)/$"), str(e))
        self.assertIn("named groups", str(e))

    def test_invalid_regex_refused(self):
        """An invalid regex is a RoutingError naming the key."""
        e = self.assertRaises(RoutingError, route, "x", consumer_a, path=r"^/(")
        self.assertIn("path=", str(e))

    def test_compiled_pattern_accepted(self):
        """A compiled regex works as a filter."""
        r = route("x", consumer_a, path=re.compile(r"^/(?P<a>A)$", re.I))
        self.assertEqual(r.match({"path": "/a"}), (consumer_a, {"a": "a"}))

    def test_bad_channel_name_refused(self):
        """An invalid channel name is a RoutingError."""
        self.assertRaises(RoutingError, route, "bad name", consumer_a)
        self.assertRaises(RoutingError, route, [], consumer_a)

    def test_several_channels(self):
        """A route may take a list of channels."""
        r = route(["a", "b"], consumer_a)
        self.assertEqual(r.channel_names(), {"a", "b"})

    def test_not_callable_refused(self):
        """A consumer that is neither callable nor a dotted path is refused."""
        self.assertRaises(RoutingError, route, "x", 42)

    def test_dotted_path_resolved(self):
        """A dotted-path consumer is imported by ``resolve``."""
        r = route("x", "tests.test_routing.consumer_a").resolve()
        self.assertIs(r.consumer, consumer_a)

    def test_dotted_path_unimportable(self):
        """An unimportable dotted path is a RoutingError naming it."""
        e = self.assertRaises(RoutingError, route("x", "tests.test_routing.nope").resolve)
        self.assertIn("tests.test_routing.nope", str(e))


class RouteClassTests(SynchronousTestCase):
    """``route_class`` takes the channels from the class."""

    def test_channels_from_class(self):
        """The channels are the class's ``channel_names()``; the class is the consumer."""
        r = route_class(ChatConsumer, path=r"^/chat/$")
        self.assertEqual(r.channel_names(), {"websocket.connect", "websocket.receive"})
        self.assertEqual(r.match({"path": "/chat/"}), (ChatConsumer, {}))

    def test_dotted_path(self):
        """``route_class`` accepts a dotted path to the class."""
        self.assertIs(route_class("tests.test_routing.ChatConsumer").consumer, ChatConsumer)

    def test_class_without_channel_names(self):
        """A class without ``channel_names`` is refused clearly."""
        e = self.assertRaises(RoutingError, route_class, object)
        self.assertIn("channel_names", str(e))


class IncludeTests(SynchronousTestCase):
    """``include`` flattens a routing and joins anchored prefixes."""

    def test_seed_example(self):
        """The seed's chat example: ``^/chat`` + ``^/(?P<room>...)/$`` is joined."""
        chat_connect, chat_disconnect, poll_consumer = consumer_a, consumer_b, consumer_a
        http_routing = [route("http.request", poll_consumer, path=r"^/poll/$", method=r"^POST$")]
        chat_routing = [
            route("websocket.connect", chat_connect, path=r"^/(?P<room>[a-zA-Z0-9_]+)/$"),
            route("websocket.disconnect", chat_disconnect),
        ]
        router = Router([include(chat_routing, path=r"^/chat"), include(http_routing)],
                        defaults=False)
        connect = router.candidates("websocket.connect")[0]
        self.assertEqual(connect.filters["path"].pattern, r"^/chat/(?P<room>[a-zA-Z0-9_]+)/$")
        self.assertEqual(router.match("websocket.connect", {"path": "/chat/lobby/"}),
                         (chat_connect, {"room": "lobby"}))
        self.assertIsNone(router.match("websocket.connect", {"path": "/lobby/"}))
        self.assertEqual(router.match("websocket.disconnect", {"path": "/chat/x/"}),
                         (chat_disconnect, {}))
        self.assertIsNone(router.match("websocket.disconnect", {"path": "/other/"}))
        self.assertEqual(router.match("http.request", {"path": "/poll/", "method": "POST"}),
                         (poll_consumer, {}))

    def test_unanchored_join_refused(self):
        """Joining when either pattern lacks ``^`` is an error naming both patterns."""
        inner = [route("x", consumer_a, path=r"/(?P<room>\w+)/$")]
        e = self.assertRaises(RoutingError, Router, [include(inner, path=r"^/chat")])
        self.assertIn("'^/chat'", str(e))
        self.assertIn(r"'/(?P<room>\\w+)/$'", str(e))
        inner = [route("x", consumer_a, path=r"^/(?P<room>\w+)/$")]
        e = self.assertRaises(RoutingError, Router, [include(inner, path=r"/chat")])
        self.assertIn("'/chat'", str(e))

    def test_unanchored_prefix_alone_is_fine(self):
        """A prefix on a key the route doesn't filter is used as is, ``^`` or not."""
        router = Router([include([route("x", consumer_a)], path=r"chat")], defaults=False)
        self.assertIsNotNone(router.match("x", {"path": "/a/chat"}))
        self.assertIsNone(router.match("x", {"path": "/a/"}))

    def test_nested_and_dotted(self):
        """Includes nest, and take a dotted path to a routing list."""
        router = Router([include([include("tests.test_routing.nested_routing", path=r"^/b")],
                                 path=r"^/a")], defaults=False)
        self.assertEqual(router.match("websocket.receive", {"path": "/a/b/r1/"}),
                         (consumer_b, {"room": "r1"}))

    def test_prefix_groups_become_kwargs(self):
        """Named groups in the include prefix reach the consumer too."""
        router = Router([include([route("x", consumer_a, path=r"^/(?P<b>\d+)$")],
                                 path=r"^/(?P<a>\w+)")], defaults=False)
        self.assertEqual(router.match("x", {"path": "/abc/12"}), (consumer_a, {"a": "abc", "b": "12"}))

    def test_bad_included_routing(self):
        """An include of something that isn't a routing list is refused."""
        self.assertRaises(RoutingError, Router, [include("tests.test_routing.not_a_list")])
        self.assertRaises(RoutingError, Router, [include("tests.test_routing.missing")])
        self.assertRaises(RoutingError, Router, [42])


class RouterTests(SynchronousTestCase):
    """``Router``: first match wins, defaults appended, candidates per channel."""

    def test_first_match_wins(self):
        """Of two matching routes, the first listed wins."""
        router = Router([route("x", consumer_a, path="^/a"), route("x", consumer_b)], defaults=False)
        self.assertEqual(router.match("x", {"path": "/a"}), (consumer_a, {}))
        self.assertEqual(router.match("x", {"path": "/b"}), (consumer_b, {}))

    def test_defaults_appended(self):
        """Unmatched http.request falls through to the Django view consumer; websocket.* to
        no-ops; http.disconnect to the handler's disconnect consumer."""
        from chanserve.handler import disconnect_consumer, view_consumer
        router = Router([route("http.request", consumer_a, path=r"^/api/")])
        self.assertEqual(router.match("http.request", {"path": "/api/x"}), (consumer_a, {}))
        self.assertEqual(router.match("http.request", {"path": "/other"}), (view_consumer, {}))
        for name in ("websocket.connect", "websocket.receive", "websocket.disconnect"):
            consumer, kwargs = router.match(name, {"path": "/"})
            self.assertIs(consumer, routing._noop_consumer)
        self.assertEqual(router.match("http.disconnect", {"path": "/"}), (disconnect_consumer, {}))
        self.assertEqual(router.channels[0], "http.request")

    def test_no_route_for_channel(self):
        """A channel with no routes matches nothing."""
        self.assertIsNone(Router([], defaults=False).match("nothing", {}))

    def test_candidates_only_of_channel(self):
        """Candidates are precomputed per channel, in order."""
        r1, r2, r3 = route("a", consumer_a), route("b", consumer_b), route(["a", "b"], consumer_b)
        router = Router([r1, r2, r3], defaults=False)
        self.assertEqual(list(router.candidates("a")), [r1, r3])
        self.assertEqual(list(router.candidates("b")), [r2, r3])
        self.assertEqual(router.channels, ["a", "b"])

    def test_process_specific_channel(self):
        """A message on ``abc!xyz`` is routed by the routes of ``abc!``."""
        router = Router([route("abc!", consumer_a)], defaults=False)
        self.assertEqual(router.match("abc!xyz", {}), (consumer_a, {}))

    def test_dict_routing(self):
        """The Channels 0.x dict form ``{channel: consumer}`` is accepted."""
        router = Router({"x": consumer_a}, defaults=False)
        self.assertEqual(router.match("x", {}), (consumer_a, {}))


class LoadRoutingTests(SynchronousTestCase):
    """``load_routing`` reads ``CHANNEL_LAYERS[alias]['ROUTING']``."""

    def _layers(self, routing):
        conf = {"BACKEND": "chanserve.layers.InMemoryChannelLayer"}
        if routing is not None:
            conf["ROUTING"] = routing
        return override_settings(CHANNEL_LAYERS={"default": conf})

    def test_loads_dotted_path(self):
        """A dotted path to a list is loaded, with the defaults after it."""
        with self._layers("tests.test_routing.nested_routing"):
            router = routing.load_routing()
        self.assertEqual(router.match("websocket.receive", {"path": "/r/"}), (consumer_b, {"room": "r"}))
        self.assertIs(router.match("websocket.receive", {"path": "/"})[0], routing._noop_consumer)

    def test_missing_routing_means_defaults(self):
        """No ROUTING: only the default routes."""
        with self._layers(None):
            router = routing.load_routing()
        self.assertEqual(sorted(router.channels),
                         ["http.disconnect", "http.request", "websocket.connect",
                          "websocket.disconnect", "websocket.receive"])

    def test_broken_routing_names_setting(self):
        """An unimportable or malformed ROUTING is one ImproperlyConfigured naming the setting."""
        for value in ("tests.test_routing.nope", "tests.nomodule.routing",
                      "tests.test_routing.not_a_list", "norouting"):
            with self._layers(value):
                e = self.assertRaises(ImproperlyConfigured, routing.load_routing)
            self.assertIn("CHANNEL_LAYERS['default']['ROUTING']", str(e))
            self.assertIn(value, str(e))

    def test_bad_route_inside_names_setting(self):
        """A RoutingError inside the project's routing names the setting and the problem."""
        with self._layers([route("x", "tests.test_routing.missing_consumer")]):
            e = self.assertRaises(ImproperlyConfigured, routing.load_routing)
        self.assertIn("CHANNEL_LAYERS['default']['ROUTING']", str(e))
        self.assertIn("missing_consumer", str(e))
