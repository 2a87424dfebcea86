"""The in-memory layer: the conformance suite, and what is particular to it."""

import sys

from twisted.internet import task
from twisted.trial import unittest

from chanserve.exceptions import ChannelFull
from chanserve.layers import InMemoryChannelLayer

from .layer_conformance import LayerConformanceMixin


class InMemoryLayerConformanceTests(LayerConformanceMixin, unittest.TestCase):
    """InMemoryChannelLayer passes the layer conformance suite, with a task.Clock for time."""

    def setUp(self):
        self.clock = task.Clock()

    def make_layer(self, **config):
        layer = InMemoryChannelLayer(reactor=self.clock, **config)
        layer.startService()
        self.addCleanup(layer.stopService)
        return layer

    def advance(self, seconds):
        self.clock.advance(seconds)


class InMemoryLayerTests(unittest.SynchronousTestCase):
    """Behaviour of the in-memory layer beyond the conformance suite."""

    def setUp(self):
        self.clock = task.Clock()
        self.layer = InMemoryChannelLayer(reactor=self.clock, expiry=10)
        self.layer.startService()
        self.addCleanup(self.layer.stopService)

    def test_push_without_timers(self):
        """A waiting receive fires inside send itself: no timer is scheduled to deliver."""
        d = self.layer.receive(["push"])
        calls_before = len(self.clock.getDelayedCalls())
        self.layer.send("push", {"a": 1})
        self.assertEqual(self.successResultOf(d), ("push", {"a": 1}))
        self.assertEqual(len(self.clock.getDelayedCalls()), calls_before)

    def test_chained_sends_do_not_recurse(self):
        """A receiver that sends again from its callback, 10,000 times, doesn't grow the stack."""
        remaining = [10000]
        depths = []

        def got(result):
            frame, depth = sys._getframe(), 0
            while frame is not None:
                frame, depth = frame.f_back, depth + 1
            depths.append(depth)
            remaining[0] -= 1
            if remaining[0]:
                self.layer.receive(["chain"]).addCallback(got)
                self.layer.send("chain", {"n": remaining[0]})

        self.layer.receive(["chain"]).addCallback(got)
        self.layer.send("chain", {"n": 0})
        self.assertEqual(remaining[0], 0)
        self.assertLess(max(depths) - min(depths), 5)

    def test_cancelled_receivers_do_not_accumulate(self):
        """Receives cancelled or fired on other channels leave no waiter behind."""
        for _ in range(100):
            d = self.layer.receive(["a", "b", "c"])
            self.layer.send("a", {})
            self.successResultOf(d)
            d = self.layer.receive(["a", "b"])
            d.cancel()
            self.failureResultOf(d)
        self.assertEqual(self.layer._waiters, {})

    def test_sweep_expires_unread(self):
        """The periodic sweep expires messages nobody reads, counts and logs them."""
        self.layer.send("lonely", {"a": 1})
        self.clock.advance(20)
        stats = self.successResultOf(self.layer.statistics())
        self.assertEqual(stats["messages_expired"], 1)
        self.assertEqual(stats["queue_depth"], {})

    def test_stop_counts_unread(self):
        """Messages still queued when the layer stops go with the process: counted and logged."""
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.layer.send("a", {"n": 1})
        self.layer.send("a", {"n": 2})
        self.layer.send("reply!x", {"n": 3})
        self.layer.stopService()
        stats = self.successResultOf(self.layer.statistics())
        self.assertEqual((stats["messages_dropped"], stats["queue_depth"]), (3, {}))
        warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warned, ["3 unread message(s) dropped: the in-memory layer stops with "
                                  "its process"])

    def test_expired_channel_leaves_groups(self):
        """A channel whose message expires unread is removed from its groups (ASGI rule)."""
        self.layer.group_add("g", "dead")
        self.layer.group_add("g", "alive")
        self.layer.send_group("g", {"x": 1})
        self.layer.receive(["alive"])
        self.clock.advance(20)
        self.assertEqual(self.successResultOf(self.layer.group_channels("g")), ["alive"])

    def test_group_send_to_specific_channels_shares_one_copy(self):
        """Members on '!' channels get the same dict (so a server can encode the frame once)."""
        for i in range(3):
            self.layer.group_add("fan", f"srv!{i}")
        self.layer.send_group("fan", {"text": "x"})
        got = [self.successResultOf(self.layer.receive(["srv!"]))[1] for _ in range(3)]
        self.assertIs(got[0], got[1])
        self.assertIs(got[1], got[2])

    def test_group_send_to_plain_channels_copies(self):
        """Members on plain channels each get their own copy of a group message."""
        self.layer.group_add("fan", "w1")
        self.layer.group_add("fan", "w2")
        self.layer.send_group("fan", {"l": [1]})
        a = self.successResultOf(self.layer.receive(["w1"]))[1]
        b = self.successResultOf(self.layer.receive(["w2"]))[1]
        self.assertIsNot(a, b)
        self.assertIsNot(a["l"], b["l"])

    def test_channel_full_message(self):
        """ChannelFull names the channel and its capacity."""
        layer = InMemoryChannelLayer(reactor=self.clock, capacity=1)
        layer.send("one", {})
        f = self.failureResultOf(layer.send("one", {}), ChannelFull)
        self.assertIn("'one'", str(f.value))
        self.assertIn("1", str(f.value))

    def test_bad_config(self):
        """A non-positive capacity is refused with a ValueError naming it."""
        self.assertRaises(ValueError, InMemoryChannelLayer, reactor=self.clock, capacity=0)
        self.assertRaises(ValueError, InMemoryChannelLayer, reactor=self.clock,
                          channel_capacity={"x*": -1})

    def test_bad_expiry(self):
        """A non-positive or non-number expiry/group_expiry is a ValueError naming the key."""
        for key, value in (("expiry", "abc"), ("expiry", 0), ("group_expiry", -5),
                           ("group_expiry", float("nan"))):
            e = self.assertRaises(ValueError, InMemoryChannelLayer, reactor=self.clock,
                                  **{key: value})
            self.assertIn(key, str(e))
