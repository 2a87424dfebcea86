"""OccasionalWarnings: repeated warnings become one line per interval, with a count."""

from twisted.internet import task
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial import unittest

from chanserve._occasional import OccasionalWarnings
from chanserve.layers import InMemoryChannelLayer


class OccasionalWarningsTests(unittest.SynchronousTestCase):
    """At most one line per kind per interval; the next says how many were left out."""

    def setUp(self):
        self.events = []
        self.clock = task.Clock()
        self.warnings = OccasionalWarnings(Logger(observer=self.events.append), self.clock)

    def lines(self):
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.warn]

    def test_once_per_interval(self):
        """Repeats within 10 s are left out; the first after it counts them."""
        for i in range(5):
            self.warnings.warn("full", "channel {name} full", name=f"c{i}")
        self.assertEqual(self.lines(), ["channel c0 full"])
        self.clock.advance(10)
        self.warnings.warn("full", "channel {name} full", name="c5")
        self.assertEqual(self.lines(), ["channel c0 full",
                                        "channel c5 full (4 more like it in the last 10 s)"])

    def test_kinds_apart(self):
        """Each kind has its own interval."""
        self.warnings.warn("a", "first a")
        self.warnings.warn("b", "first b")
        self.warnings.warn("a", "second a")
        self.assertEqual(self.lines(), ["first a", "first b"])


class LayerWarningsTests(unittest.SynchronousTestCase):
    """A member full on every group message is one warning per interval, every drop counted."""

    def test_group_member_full(self):
        """49 group messages missed by a full member: 49 counted, 1 line logged."""
        clock = task.Clock()
        layer = InMemoryChannelLayer(reactor=clock, channel_capacity={"slow.*": 1})
        events = []
        layer._warnings = OccasionalWarnings(Logger(observer=events.append), clock)
        layer.group_add("room", "slow.reader")
        for i in range(50):
            layer.send_group("room", {"i": i})
        stats = self.successResultOf(layer.statistics())
        self.assertEqual(stats["group_members_full"], 49)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.warn]), 1)
