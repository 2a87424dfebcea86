"""Channel, Group and Message: the user-facing API, from the reactor and from threads."""

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from chanserve import Channel, Group
from chanserve.channel import Message, holding_sends
from chanserve.exceptions import ChannelFull
from chanserve.layers import InMemoryChannelLayer


class ChannelOnReactorTests(unittest.SynchronousTestCase):
    """Channel and Group used on the reactor thread return Deferreds and never block."""

    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=task.Clock(), capacity=2)

    def test_send_returns_deferred(self):
        """Channel.send on the reactor thread returns a Deferred and delivers the message."""
        d = Channel("c", channel_layer=self.layer).send({"a": 1})
        self.assertIsInstance(d, defer.Deferred)
        self.successResultOf(d)
        self.assertEqual(self.successResultOf(self.layer.receive(["c"])), ("c", {"a": 1}))

    def test_channel_full_fails_deferred(self):
        """Over capacity, the Deferred fails with ChannelFull."""
        ch = Channel("c", channel_layer=self.layer)
        ch.send({})
        ch.send({})
        self.failureResultOf(ch.send({}), ChannelFull)

    def test_invalid_names(self):
        """Invalid channel and group names raise TypeError at construction."""
        self.assertRaises(TypeError, Channel, "bad name", channel_layer=self.layer)
        self.assertRaises(TypeError, Group, "bad!group", channel_layer=self.layer)

    def test_group_add_send_discard(self):
        """Group.add takes Channels or names; send reaches members; discard removes them."""
        g = Group("room", channel_layer=self.layer)
        g.add(Channel("m1", channel_layer=self.layer))
        g.add("m2")
        self.assertEqual(sorted(self.successResultOf(g.channels())), ["m1", "m2"])
        g.send({"text": "hi"})
        self.assertEqual(self.successResultOf(self.layer.receive(["m1"]))[1], {"text": "hi"})
        self.assertEqual(self.successResultOf(self.layer.receive(["m2"]))[1], {"text": "hi"})
        g.discard(Channel("m1", channel_layer=self.layer))
        self.assertEqual(self.successResultOf(g.channels()), ["m2"])

    def test_equality(self):
        """Channels compare and hash by name; str() is the name."""
        a = Channel("same", channel_layer=self.layer)
        b = Channel("same", channel_layer=self.layer)
        self.assertEqual(a, b)
        self.assertEqual(len({a, b}), 1)
        self.assertEqual(str(a), "same")


class HeldSendsTests(unittest.SynchronousTestCase):
    """Sends inside holding_sends() wait for flush, in order; immediately=True goes at once."""

    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=task.Clock())

    def test_held_until_flush(self):
        """Channel and Group sends are held, then flushed in the order they were made."""
        Group("g", channel_layer=self.layer).add("member")
        with holding_sends() as held:
            Channel("out", channel_layer=self.layer).send({"i": 1})
            Group("g", channel_layer=self.layer).send({"i": 2})
            Channel("out", channel_layer=self.layer).send({"i": 3})
        self.assertEqual(len(held), 3)
        self.assertEqual(self.successResultOf(self.layer.statistics())["messages_sent"], 0)
        self.assertEqual(self.successResultOf(held.flush()), [])
        got = [self.successResultOf(self.layer.receive(["out"]))[1]["i"] for _ in range(2)]
        self.assertEqual(got, [1, 3])
        self.assertEqual(self.successResultOf(self.layer.receive(["member"]))[1], {"i": 2})

    def test_immediately(self):
        """immediately=True bypasses holding."""
        with holding_sends() as held:
            Channel("now", channel_layer=self.layer).send({"x": 1}, immediately=True)
        self.assertEqual(len(held), 0)
        self.assertEqual(self.successResultOf(self.layer.receive(["now"]))[1], {"x": 1})

    def test_held_content_is_checked_and_copied(self):
        """A held send checks content at once (TypeError in the consumer) and copies it."""
        content = {"l": [1]}
        with holding_sends() as held:
            ch = Channel("c", channel_layer=self.layer)
            self.assertRaises(TypeError, ch.send, {"bad": object()})
            ch.send(content)
            content["l"].append(2)
        held.flush()
        self.assertEqual(self.successResultOf(self.layer.receive(["c"]))[1], {"l": [1]})

    def test_flush_copies_once(self):
        """Held content is copied when held; flushing through the in-memory layer adds no copy."""
        with holding_sends() as held:
            Channel("c", channel_layer=self.layer).send({"x": [1]})
        (_, _, _, held_copy), = list(held)
        held.flush()
        self.assertIs(self.successResultOf(self.layer.receive(["c"]))[1], held_copy)

    def test_flush_reports_failures(self):
        """flush fires with the failures of sends that did not go through."""
        layer = InMemoryChannelLayer(reactor=task.Clock(), capacity=1)
        with holding_sends() as held:
            Channel("c", channel_layer=layer).send({"i": 1})
            Channel("c", channel_layer=layer).send({"i": 2})
        failures = self.successResultOf(held.flush())
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(ChannelFull))

    def test_discard(self):
        """discard forgets held sends."""
        with holding_sends() as held:
            Channel("c", channel_layer=self.layer).send({})
        held.discard()
        self.successResultOf(held.flush())
        self.assertEqual(self.successResultOf(self.layer.statistics())["messages_sent"], 0)

    def test_not_held_outside(self):
        """Outside holding_sends a send goes at once."""
        with holding_sends():
            pass
        Channel("c", channel_layer=self.layer).send({})
        self.assertEqual(self.successResultOf(self.layer.statistics())["messages_sent"], 1)


class ChannelFromThreadTests(unittest.TestCase):
    """From a non-reactor thread, Channel/Group calls hop to the reactor and block."""

    def setUp(self):
        self.layer = InMemoryChannelLayer(reactor=reactor, capacity=1)

    @defer.inlineCallbacks
    def test_send_from_thread(self):
        """A send from a thread returns None once the layer has the message."""
        def work():
            return Channel("t", channel_layer=self.layer).send({"from": "thread"})
        result = yield threads.deferToThread(work)
        self.assertIsNone(result)
        got = yield self.layer.receive(["t"])
        self.assertEqual(got, ("t", {"from": "thread"}))

    @defer.inlineCallbacks
    def test_channel_full_raised_in_thread(self):
        """ChannelFull is raised in the calling thread."""
        def work():
            ch = Channel("t", channel_layer=self.layer)
            ch.send({})
            try:
                ch.send({})
            except ChannelFull:
                return "raised"
        self.assertEqual((yield threads.deferToThread(work)), "raised")
        yield self.layer.flush()

    @defer.inlineCallbacks
    def test_group_from_thread(self):
        """Group add/send/channels work from a thread."""
        def work():
            g = Group("tg", channel_layer=self.layer)
            g.add("tm")
            g.send({"g": 1})
            return g.channels()
        self.assertEqual((yield threads.deferToThread(work)), ["tm"])
        got = yield self.layer.receive(["tm"])
        self.assertEqual(got, ("tm", {"g": 1}))

    @defer.inlineCallbacks
    def test_held_in_thread(self):
        """holding_sends inside a thread holds that thread's sends only."""
        def work():
            with holding_sends() as held:
                Channel("h", channel_layer=self.layer).send({"held": True})
            return held
        held = yield threads.deferToThread(work)
        self.assertEqual(len(held), 1)
        stats = yield self.layer.statistics()
        self.assertEqual(stats["messages_sent"], 0)
        yield held.flush()
        got = yield self.layer.receive(["h"])
        self.assertEqual(got, ("h", {"held": True}))


class MessageTests(unittest.SynchronousTestCase):
    """Message exposes content, channel, reply_channel and channel_layer like Channels 1.x."""

    def test_attributes(self):
        """reply_channel is a Channel on the same layer; content is reachable by key."""
        layer = InMemoryChannelLayer(reactor=task.Clock())
        m = Message({"reply_channel": "r!x", "path": "/"}, "websocket.connect", layer)
        self.assertEqual(m.channel, Channel("websocket.connect", channel_layer=layer))
        self.assertEqual(m.reply_channel.name, "r!x")
        self.assertIs(m.reply_channel.channel_layer, layer)
        self.assertIs(m.channel_layer, layer)
        self.assertEqual(m["path"], "/")
        self.assertEqual(m.get("missing", 5), 5)
        self.assertIn("path", m)

    def test_no_reply_channel(self):
        """A message without reply_channel has reply_channel None."""
        m = Message({"a": 1}, "chat-messages", InMemoryChannelLayer(reactor=task.Clock()))
        self.assertIsNone(m.reply_channel)


class BlockingCallTests(unittest.TestCase):
    """blocking_call runs a function on the reactor from a thread and hands its result back."""

    @defer.inlineCallbacks
    def test_result_and_deferred(self):
        """Plain results and Deferred results both come back to the thread."""
        from chanserve.layers._bridge import blocking_call

        def work():
            plain = blocking_call(reactor, lambda x: x + 1, 1)
            later = blocking_call(reactor, lambda: task.deferLater(reactor, 0, lambda: "later"))
            return plain, later
        self.assertEqual((yield threads.deferToThread(work)), (2, "later"))

    @defer.inlineCallbacks
    def test_exception_raised_in_thread(self):
        """An exception (raised or a failed Deferred) is raised in the calling thread."""
        from chanserve.layers._bridge import blocking_call

        def boom():
            raise ValueError("boom")

        def work():
            caught = []
            for f in (boom, lambda: defer.fail(KeyError("k"))):
                try:
                    blocking_call(reactor, f)
                except (ValueError, KeyError) as e:
                    caught.append(type(e).__name__)
            return caught
        self.assertEqual((yield threads.deferToThread(work)), ["ValueError", "KeyError"])
