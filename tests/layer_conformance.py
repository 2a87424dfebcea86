"""
The behaviour every channel layer must show, written against ``IChannelLayer`` only.

A test case mixes in ``LayerConformanceMixin`` and provides:

- ``make_layer(**config)``: a started layer built with ``config`` (the layer's
  ``CONFIG`` keys: ``expiry``, ``group_expiry``, ``capacity``,
  ``channel_capacity``), cleaned up by the test case;
- ``advance(seconds)``: move the layer's notion of time forward (a
  ``task.Clock`` for the in-memory layer), returning ``None`` or a Deferred.
"""

from twisted.internet import defer
from zope.interface.verify import verifyObject

from chanserve.exceptions import ChannelFull
from chanserve.layers import IChannelLayer


class LayerConformanceMixin:
    """Conformance tests for an ``IChannelLayer`` implementation."""

    def make_layer(self, **config):
        raise NotImplementedError

    def advance(self, seconds):
        raise NotImplementedError

    async def _advance(self, seconds):
        result = self.advance(seconds)
        if result is not None:
            await result

    async def test_provides_interface(self):
        """The layer provides IChannelLayer, with at least groups, flush and statistics."""
        layer = self.make_layer()
        self.assertTrue(verifyObject(IChannelLayer, layer))
        for extension in ("groups", "flush", "statistics"):
            self.assertIn(extension, layer.extensions)

    async def test_receivable_when_working(self):
        """A working layer says messages to any channel can be received now."""
        layer = self.make_layer()
        await layer.send("test.probe", {"n": 1})
        for name in ("test.probe", "http.request", "chanserve.abc!", "chanserve.abc!def"):
            self.assertIs(layer.receivable(name), True)

    async def test_send_receive(self):
        """A message sent on a channel is received from it, with its content intact."""
        layer = self.make_layer()
        await layer.send("test.a", {"text": "hello", "n": 3})
        channel, message = await layer.receive(["test.a"])
        self.assertEqual(channel, "test.a")
        self.assertEqual(message, {"text": "hello", "n": 3})

    async def test_value_types_round_trip(self):
        """bytes and str stay distinct; ints, floats, bools, None, lists and dicts survive."""
        layer = self.make_layer()
        content = {
            "s": "ünïcode", "b": b"\x00\xffbytes", "i": 2**40, "neg": -7, "f": 1.5,
            "t": True, "fa": False, "none": None, "list": [1, "two", b"three", [4]],
            "dict": {"nested": {"deep": b"x"}}, "empty": b"", "emptys": "",
        }
        await layer.send("test.types", content)
        _, message = await layer.receive(["test.types"])
        self.assertEqual(message, content)
        self.assertIsInstance(message["b"], bytes)
        self.assertIsInstance(message["s"], str)
        self.assertIsInstance(message["empty"], bytes)
        self.assertIsInstance(message["emptys"], str)
        self.assertIs(message["t"], True)
        self.assertIsInstance(message["f"], float)

    async def test_tuples_become_lists(self):
        """Tuples are accepted and arrive as lists (headers are often built as tuples)."""
        layer = self.make_layer()
        await layer.send("test.tuple", {"headers": ((b"a", b"1"),)})
        _, message = await layer.receive(["test.tuple"])
        self.assertEqual(message, {"headers": [[b"a", b"1"]]})

    async def test_receive_waits_for_send(self):
        """A receive made before any message fires when one is sent."""
        layer = self.make_layer()
        d = layer.receive(["test.wait"])
        await layer.send("test.wait", {"v": 1})
        channel, message = await d
        self.assertEqual((channel, message), ("test.wait", {"v": 1}))

    async def test_fifo(self):
        """Messages on one channel are received in the order they were sent."""
        layer = self.make_layer()
        for i in range(20):
            await layer.send("test.fifo", {"i": i})
        got = [(await layer.receive(["test.fifo"]))[1]["i"] for _ in range(20)]
        self.assertEqual(got, list(range(20)))

    async def test_receive_many_channels(self):
        """A receive over several channels gets messages from each, naming the channel."""
        layer = self.make_layer()
        await layer.send("test.x", {"c": "x"})
        await layer.send("test.y", {"c": "y"})
        got = {}
        for _ in range(2):
            channel, message = await layer.receive(["test.x", "test.y", "test.z"])
            got[channel] = message["c"]
        self.assertEqual(got, {"test.x": "x", "test.y": "y"})

    async def test_one_reader_per_message(self):
        """Two waiting receivers on one channel get different messages, never the same one."""
        layer = self.make_layer()
        d1 = layer.receive(["test.shared"])
        d2 = layer.receive(["test.shared"])
        await layer.send("test.shared", {"i": 1})
        await layer.send("test.shared", {"i": 2})
        (_, m1), (_, m2) = await d1, await d2
        self.assertEqual(sorted([m1["i"], m2["i"]]), [1, 2])

    async def test_process_specific_channels(self):
        """Receiving on "prefix!" gets messages sent to "prefix!anything", naming the full channel."""
        layer = self.make_layer()
        await layer.send("test.proc!one", {"n": 1})
        await layer.send("test.proc!two", {"n": 2})
        first = await layer.receive(["test.proc!"])
        second = await layer.receive(["test.proc!"])
        self.assertEqual([first, second], [("test.proc!one", {"n": 1}), ("test.proc!two", {"n": 2})])

    async def test_process_specific_waiting(self):
        """A receive waiting on "prefix!" fires for a message to "prefix!x" sent afterwards."""
        layer = self.make_layer()
        d = layer.receive(["test.later!"])
        await layer.send("test.later!abc", {"k": "v"})
        self.assertEqual(await d, ("test.later!abc", {"k": "v"}))

    async def test_receive_full_specific_name_refused(self):
        """Receiving on a full process-specific name is a TypeError (receive on the prefix)."""
        layer = self.make_layer()
        with self.assertRaises(TypeError):
            await layer.receive(["test.proc!abc"])

    async def test_new_channel(self):
        """new_channel gives unique names starting with the pattern and 96+ random bits."""
        layer = self.make_layer()
        names = set()
        for pattern in ["test.reply!", "test.single?"]:
            for _ in range(50):
                name = await layer.new_channel(pattern)
                self.assertTrue(name.startswith(pattern))
                # >= 96 bits: at least 16 url-safe base64 characters after the pattern
                self.assertGreaterEqual(len(name) - len(pattern), 16)
                names.add(name)
        self.assertEqual(len(names), 100)
        name = await layer.new_channel("test.single?")
        await layer.send(name, {"ok": True})
        self.assertEqual(await layer.receive([name]), (name, {"ok": True}))

    async def test_new_channel_bad_pattern(self):
        """A new_channel pattern not ending in ! or ? is a TypeError."""
        layer = self.make_layer()
        with self.assertRaises(TypeError):
            await layer.new_channel("test.plain")

    async def test_invalid_channel_names(self):
        """Bad channel names are TypeErrors on send and receive, and nothing is sent."""
        layer = self.make_layer()
        for bad in ["", "has space", "x" * 100, "two!bang!s", "q?and!b", "ünï", b"bytes", None]:
            with self.assertRaises(TypeError, msg=repr(bad)):
                await layer.send(bad, {"a": 1})
        with self.assertRaises(TypeError):
            await layer.receive(["bad name"])
        with self.assertRaises(TypeError):
            await layer.receive("test.a")
        stats = await layer.statistics()
        self.assertEqual(stats["messages_sent"], 0)

    async def test_invalid_group_names(self):
        """Group names may not contain ! or ?, spaces, or be 100+ characters long."""
        layer = self.make_layer()
        for bad in ["g!x", "g?x", "with space", "g" * 100, ""]:
            with self.assertRaises(TypeError, msg=repr(bad)):
                await layer.group_add(bad, "test.chan")
            with self.assertRaises(TypeError, msg=repr(bad)):
                await layer.send_group(bad, {"a": 1})

    async def test_invalid_content(self):
        """Content that isn't JSON-like plus bytes is a TypeError naming the key."""
        layer = self.make_layer()
        with self.assertRaises(TypeError):
            await layer.send("test.bad", ["not", "a", "dict"])
        with self.assertRaises(TypeError) as e:
            await layer.send("test.bad", {"ok": 1, "when": object()})
        self.assertIn("when", str(e.exception))
        with self.assertRaises(TypeError) as e:
            await layer.send("test.bad", {"nested": {"deep": [1, {2, 3}]}})
        self.assertIn("deep", str(e.exception))
        with self.assertRaises(TypeError) as e:
            await layer.send("test.bad", {1: "int key"})
        self.assertIn("1", str(e.exception))
        stats = await layer.statistics()
        self.assertEqual(stats["messages_sent"], 0)

    async def test_no_mutation_after_send(self):
        """Changing a dict after sending it does not change what the receiver gets."""
        layer = self.make_layer()
        content = {"list": [1, 2], "d": {"k": "v"}}
        await layer.send("test.mut", content)
        content["list"].append(3)
        content["d"]["k"] = "changed"
        content["new"] = True
        _, message = await layer.receive(["test.mut"])
        self.assertEqual(message, {"list": [1, 2], "d": {"k": "v"}})

    async def test_capacity(self):
        """A send over the channel's capacity raises ChannelFull; reading makes room again."""
        layer = self.make_layer(capacity=3)
        for i in range(3):
            await layer.send("test.cap", {"i": i})
        with self.assertRaises(ChannelFull):
            await layer.send("test.cap", {"i": 3})
        await layer.receive(["test.cap"])
        await layer.send("test.cap", {"i": 4})
        stats = await layer.statistics()
        self.assertEqual(stats["channel_full"], 1)
        got = [(await layer.receive(["test.cap"]))[1]["i"] for _ in range(3)]
        self.assertEqual(got, [1, 2, 4])

    async def test_channel_capacity_globs(self):
        """channel_capacity globs override the default capacity for matching channels."""
        layer = self.make_layer(capacity=2, channel_capacity={"test.big*": 5})
        for i in range(5):
            await layer.send("test.bigone", {"i": i})
        with self.assertRaises(ChannelFull):
            await layer.send("test.bigone", {"i": 5})
        for i in range(2):
            await layer.send("test.small", {"i": i})
        with self.assertRaises(ChannelFull):
            await layer.send("test.small", {"i": 2})

    async def test_capacity_per_specific_channel(self):
        """Process-specific channels each have their own capacity under a shared prefix."""
        layer = self.make_layer(capacity=2)
        for name in ["test.cp!a", "test.cp!b"]:
            for i in range(2):
                await layer.send(name, {"i": i})
            with self.assertRaises(ChannelFull):
                await layer.send(name, {"i": 2})

    async def test_expiry(self):
        """Unread messages expire after `expiry`; expiries are counted as dropped."""
        layer = self.make_layer(expiry=10)
        await layer.send("test.exp", {"old": True})
        await self._advance(11)
        await layer.send("test.exp", {"old": False})
        _, message = await layer.receive(["test.exp"])
        self.assertEqual(message, {"old": False})
        stats = await layer.statistics()
        self.assertEqual(stats["messages_expired"], 1)
        self.assertGreaterEqual(stats["messages_dropped"], 1)

    async def test_expired_messages_free_capacity(self):
        """Expired messages don't count against capacity."""
        layer = self.make_layer(expiry=10, capacity=2)
        await layer.send("test.expcap", {"i": 0})
        await layer.send("test.expcap", {"i": 1})
        await self._advance(11)
        await layer.send("test.expcap", {"i": 2})
        await layer.send("test.expcap", {"i": 3})
        got = [(await layer.receive(["test.expcap"]))[1]["i"] for _ in range(2)]
        self.assertEqual(got, [2, 3])

    async def test_groups(self):
        """A group send reaches every member; a discarded member gets nothing more."""
        layer = self.make_layer()
        await layer.group_add("chat", "test.g1")
        await layer.group_add("chat", "test.g2")
        await layer.group_add("chat", "test.gp!3")
        self.assertEqual(sorted(await layer.group_channels("chat")),
                         ["test.g1", "test.g2", "test.gp!3"])
        await layer.send_group("chat", {"text": "hi"})
        self.assertEqual(await layer.receive(["test.g1"]), ("test.g1", {"text": "hi"}))
        self.assertEqual(await layer.receive(["test.g2"]), ("test.g2", {"text": "hi"}))
        self.assertEqual(await layer.receive(["test.gp!"]), ("test.gp!3", {"text": "hi"}))
        await layer.group_discard("chat", "test.g2")
        await layer.group_discard("chat", "test.never-added")
        await layer.send_group("chat", {"text": "again"})
        self.assertEqual(await layer.receive(["test.g1"]), ("test.g1", {"text": "again"}))
        d = layer.receive(["test.g2"])
        await layer.send("test.g2", {"direct": True})
        self.assertEqual(await d, ("test.g2", {"direct": True}))

    async def test_group_send_no_mutation(self):
        """Changing a dict after a group send does not change what members get."""
        layer = self.make_layer()
        await layer.group_add("mutgroup", "test.gm")
        content = {"list": [1]}
        await layer.send_group("mutgroup", content)
        content["list"].append(2)
        self.assertEqual(await layer.receive(["test.gm"]), ("test.gm", {"list": [1]}))

    async def test_group_send_full_member(self):
        """A full member misses the group message (counted); the other members still get it."""
        layer = self.make_layer(capacity=1)
        await layer.group_add("busy", "test.full")
        await layer.group_add("busy", "test.free")
        await layer.send("test.full", {"first": True})
        await layer.send_group("busy", {"text": "group"})
        self.assertEqual(await layer.receive(["test.free"]), ("test.free", {"text": "group"}))
        self.assertEqual(await layer.receive(["test.full"]), ("test.full", {"first": True}))
        stats = await layer.statistics()
        self.assertEqual(stats["group_members_full"], 1)
        self.assertGreaterEqual(stats["messages_dropped"], 1)

    async def test_group_expiry(self):
        """Members leave a group group_expiry seconds after their last add; re-adding refreshes."""
        layer = self.make_layer(group_expiry=100, expiry=1000)
        await layer.group_add("exp", "test.ge1")
        await layer.group_add("exp", "test.ge2")
        await self._advance(60)
        await layer.group_add("exp", "test.ge2")
        await self._advance(60)
        self.assertEqual(await layer.group_channels("exp"), ["test.ge2"])
        await layer.send_group("exp", {"x": 1})
        self.assertEqual(await layer.receive(["test.ge2"]), ("test.ge2", {"x": 1}))
        await self._advance(101)
        self.assertEqual(await layer.group_channels("exp"), [])

    async def test_flush(self):
        """flush drops queued messages and groups."""
        layer = self.make_layer()
        await layer.send("test.fl", {"a": 1})
        await layer.group_add("flushed", "test.fl2")
        await layer.flush()
        self.assertEqual(await layer.group_channels("flushed"), [])
        await layer.send("test.fl", {"a": 2})
        self.assertEqual(await layer.receive(["test.fl"]), ("test.fl", {"a": 2}))

    async def test_cancel_waiting_receive(self):
        """A cancelled receive fails with CancelledError and takes no later message."""
        layer = self.make_layer()
        d = layer.receive(["test.cancel"])
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            await d
        await layer.send("test.cancel", {"kept": True})
        self.assertEqual(await layer.receive(["test.cancel"]), ("test.cancel", {"kept": True}))

    async def test_cancel_at_arrival(self):
        """Cancelling a receive as its message arrives never loses the message."""
        layer = self.make_layer()
        d = layer.receive(["test.race"])
        sent = layer.send("test.race", {"race": 1})
        d.cancel()
        got = []
        try:
            got.append(await d)
        except defer.CancelledError:
            pass
        await sent
        if not got:
            got.append(await layer.receive(["test.race"]))
        self.assertEqual(got, [("test.race", {"race": 1})])
        # and exactly once: the next message is the next one
        await layer.send("test.race", {"race": 2})
        self.assertEqual(await layer.receive(["test.race"]), ("test.race", {"race": 2}))

    async def test_statistics(self):
        """Statistics count sends and deliveries and show per-channel queue depth."""
        layer = self.make_layer()
        await layer.send("test.st", {"a": 1})
        await layer.send("test.st", {"a": 2})
        await layer.send("test.st2", {"a": 3})
        await layer.receive(["test.st"])
        stats = await layer.statistics()
        for key in ("messages_sent", "messages_delivered", "messages_expired",
                    "messages_dropped", "channel_full", "group_sends", "group_members_full"):
            self.assertIn(key, stats)
        self.assertEqual(stats["messages_sent"], 3)
        self.assertEqual(stats["messages_delivered"], 1)
        self.assertEqual(stats["queue_depth"].get("test.st"), 1)
        self.assertEqual(stats["queue_depth"].get("test.st2"), 1)
