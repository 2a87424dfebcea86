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
        """Repeats within 10 s are left out, and summarised when the 10 s end."""
        for i in range(5):
            self.warnings.warn("full", "channel {name} full", name=f"c{i}")
        self.assertEqual(self.lines(), ["channel c0 full"])
        self.clock.advance(9.9)
        self.assertEqual(len(self.lines()), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.lines(), ["channel c0 full",
                                        "channel c4 full (and 3 more like it in the last 10 s)"])
        self.clock.advance(60)
        self.assertEqual(len(self.lines()), 2, "nothing more to say")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.warnings.warn("full", "channel {name} full", name="c5")
        self.assertEqual(self.lines()[2:], ["channel c5 full"])

    def test_steady_load(self):
        """Under a steady stream: one line per interval, every warning accounted for."""
        for second in range(30):
            for i in range(3):
                self.warnings.warn("full", "full {n}", n=second * 3 + i)
            self.clock.advance(1)
        self.assertEqual(self.lines(), ["full 0", "full 29 (and 28 more like it in the last 10 s)",
                                        "full 59 (and 29 more like it in the last 10 s)",
                                        "full 89 (and 29 more like it in the last 10 s)"])

    def test_one_left_out(self):
        """A single line left out is logged as it was, without a count."""
        self.warnings.warn("full", "first")
        self.warnings.warn("full", "second")
        self.clock.advance(10)
        self.assertEqual(self.lines(), ["first", "second"])

    def test_flush(self):
        """``flush`` logs what is pending at once and leaves no timer behind."""
        for i in range(3):
            self.warnings.warn("full", "full {n}", n=i)
        self.warnings.warn("other", "other")
        self.warnings.flush()
        self.assertEqual(self.lines(), ["full 0", "other",
                                        "full 2 (and 1 more like it in the last 0 s)"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

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
        warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 1)
        layer.startService()
        layer.stopService()
        warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 2)
        self.assertIn("misses this message (and 47 more like it", warned[1])
        self.assertEqual(clock.getDelayedCalls(), [])
