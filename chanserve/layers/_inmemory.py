"""The in-memory channel layer: one process, push-based, no serialisation."""

import fnmatch
import itertools
import re
from collections import deque

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from .._occasional import OccasionalWarnings
from ..exceptions import ChannelFull
from ._interfaces import IChannelLayer
from ._validation import (
    ReceiveNameChecker,
    check_positive_numbers,
    _copy,
    new_channel_name,
    process_prefix,
    validate_channel_name,
    validate_content,
    validate_group_name,
)


class _Waiter:
    """One pending ``receive``: registered under every key it waits on."""

    __slots__ = ("keys", "deferred")

    def __init__(self, keys):
        self.keys = keys
        self.deferred = None


class CapacityRules:
    """Capacity per channel: ``channel_capacity`` globs (first match wins), else ``capacity``."""

    _CACHE_LIMIT = 10000

    def __init__(self, capacity, channel_capacity=None):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        self.default = capacity
        self._rules = []
        for pattern, n in (channel_capacity or {}).items():
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"channel_capacity[{pattern!r}] must be a positive int, not {n!r}")
            regex = pattern if isinstance(pattern, re.Pattern) else re.compile(fnmatch.translate(pattern))
            self._rules.append((regex, n))
        self._cache = {}

    def __call__(self, channel):
        if not self._rules:
            return self.default
        try:
            return self._cache[channel]
        except KeyError:
            pass
        n = self.default
        for regex, cap in self._rules:
            if regex.match(channel):
                n = cap
                break
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[channel] = n
        return n


@implementer(IChannelLayer)
class InMemoryChannelLayer(service.Service):
    """
    A channel layer held in this process's memory.

    A waiting ``receive`` fires the moment a matching message is sent; no
    timer is involved. Time (expiry) comes from ``reactor``, an
    ``IReactorTime`` (a ``task.Clock`` in tests). Messages are copied once
    on send; a group send to process-specific (``!``) channels hands every
    member the same copy, so readers of ``!`` channels must not mutate what
    they receive.
    """

    _log = Logger()
    name = "channel-layer"
    extensions = ["groups", "flush", "statistics"]
    cross_process = False

    def __init__(self, expiry=60, group_expiry=86400, capacity=100,
                 channel_capacity=None, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        check_positive_numbers(expiry=expiry, group_expiry=group_expiry)
        self.reactor = reactor
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.capacity = CapacityRules(capacity, channel_capacity)
        self._warnings = OccasionalWarnings(self._log, reactor)
        # key (channel name, or "abc!" for process-specific) -> deque of
        # [expires_at, channel, message]
        self._queues = {}
        # process-specific channel name -> number of its messages queued
        self._specific_counts = {}
        self._waiters = {}
        # group -> {channel: expires_at}; channel -> set of groups
        self._groups = {}
        self._memberships = {}
        self._wakeups = deque()
        self._dispatching = False
        self._rotation = itertools.count()
        self._sweeper = None
        self._checked_receive_names = ReceiveNameChecker()
        self._stats = dict.fromkeys(
            ("messages_sent", "messages_delivered", "messages_expired",
             "messages_dropped", "channel_full", "group_sends", "group_members_full"), 0)

    # -- service -------------------------------------------------------------

    def startService(self):
        super().startService()
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        interval = max(0.05, min(self.expiry / 4.0, 5.0))
        self._sweeper.start(interval, now=False)

    def stopService(self):
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        unread = sum(len(queue) for queue in self._queues.values())
        if unread:
            self._stats["messages_dropped"] += unread
            self._log.warn("{count} unread message(s) dropped: the in-memory layer stops with "
                           "its process", count=unread)
            self._queues.clear()
            self._specific_counts.clear()
        self._warnings.flush()
        return super().stopService()

    # -- sending -------------------------------------------------------------

    def send(self, channel, message):
        try:
            self._send(validate_channel_name(channel), validate_content(message))
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def send_validated(self, channel, message):
        """``send`` for a message already returned by ``validate_content`` (not copied again)."""
        try:
            self._send(validate_channel_name(channel), message)
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def _send(self, channel, message):
        """Queue an already validated and copied message; raise ChannelFull."""
        key = process_prefix(channel)
        queue = self._queues.get(key)
        now = self.reactor.seconds()
        if queue is not None and queue and queue[0][0] <= now:
            self._expire(key, queue, now)
        specific = key != channel
        depth = (self._specific_counts.get(channel, 0) if specific
                 else (len(queue) if queue else 0))
        if depth >= self.capacity(channel):
            self._stats["channel_full"] += 1
            raise ChannelFull(f"channel {channel!r} is at its capacity of {self.capacity(channel)}")
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append((now + self.expiry, channel, message))
        if specific:
            self._specific_counts[channel] = depth + 1
        self._stats["messages_sent"] += 1
        if key in self._waiters:
            self._wake(key)

    def send_group(self, group, message):
        try:
            message = validate_content(message)
        except Exception:
            return defer.fail()
        return self.send_group_validated(group, message)

    def send_group_validated(self, group, message):
        """``send_group`` for a message already returned by ``validate_content``."""
        try:
            validate_group_name(group)
        except Exception:
            return defer.fail()
        self._stats["group_sends"] += 1
        members = self._live_members(group)
        for channel in list(members):
            content = message if "!" in channel else _copy(message, [])
            try:
                self._send(channel, content)
            except ChannelFull:
                self._stats["group_members_full"] += 1
                self._stats["messages_dropped"] += 1
                self._warnings.warn(
                    "group-full", "Group {group!r}: member {channel!r} is full; it misses "
                    "this message", group=group, channel=channel)
        return defer.succeed(None)

    # -- receiving -----------------------------------------------------------

    def receive(self, channels):
        try:
            keys = self._checked_receive_names(channels)
        except Exception:
            return defer.fail()
        item = self._pop_any(keys)
        if item is not None:
            return defer.succeed(item)
        waiter = _Waiter(keys)
        waiter.deferred = defer.Deferred(lambda d: self._unregister(waiter))
        for key in keys:
            self._waiters.setdefault(key, deque()).append(waiter)
        return waiter.deferred

    def _pop_any(self, keys):
        n = len(keys)
        start = next(self._rotation) % n if n > 1 else 0
        for i in range(n):
            key = keys[(start + i) % n]
            queue = self._queues.get(key)
            if queue:
                item = self._pop(key, queue)
                if item is not None:
                    return item
        return None

    def _pop(self, key, queue):
        now = self.reactor.seconds()
        if queue[0][0] <= now:
            self._expire(key, queue, now)
            if not queue:
                return None
        _, channel, message = queue.popleft()
        if not queue:
            del self._queues[key]
        if key != channel:
            self._decrement(channel)
        self._stats["messages_delivered"] += 1
        return channel, message

    def _unregister(self, waiter):
        for key in waiter.keys:
            waiters = self._waiters.get(key)
            if waiters is not None:
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass
                if not waiters:
                    del self._waiters[key]

    def _wake(self, key):
        # A trampoline: a receiver fired here may send or receive again;
        # those wake-ups are queued and handled by this same loop, so the
        # stack never grows with the length of a chain of messages.
        self._wakeups.append(key)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._wakeups:
                key = self._wakeups.popleft()
                while True:
                    waiters = self._waiters.get(key)
                    queue = self._queues.get(key)
                    if not waiters or not queue:
                        break
                    item = self._pop(key, queue)
                    if item is None:
                        break
                    waiter = waiters[0]
                    self._unregister(waiter)
                    waiter.deferred.callback(item)
        finally:
            self._dispatching = False

    # -- channels and groups -------------------------------------------------

    def new_channel(self, pattern):
        try:
            return defer.succeed(new_channel_name(pattern))
        except Exception:
            return defer.fail()

    def group_add(self, group, channel):
        try:
            validate_group_name(group)
            validate_channel_name(channel)
        except Exception:
            return defer.fail()
        self._groups.setdefault(group, {})[channel] = self.reactor.seconds() + self.group_expiry
        self._memberships.setdefault(channel, set()).add(group)
        return defer.succeed(None)

    def group_discard(self, group, channel):
        try:
            validate_group_name(group)
            validate_channel_name(channel)
        except Exception:
            return defer.fail()
        self._remove_member(group, channel)
        return defer.succeed(None)

    def group_channels(self, group):
        try:
            validate_group_name(group)
        except Exception:
            return defer.fail()
        return defer.succeed(list(self._live_members(group)))

    def _live_members(self, group):
        members = self._groups.get(group)
        if not members:
            return {}
        now = self.reactor.seconds()
        stale = [c for c, expires in members.items() if expires <= now]
        for channel in stale:
            self._remove_member(group, channel)
        return self._groups.get(group, {})

    def _remove_member(self, group, channel):
        members = self._groups.get(group)
        if members is not None and members.pop(channel, None) is not None:
            if not members:
                del self._groups[group]
        groups = self._memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._memberships[channel]

    # -- expiry --------------------------------------------------------------

    def _expire(self, key, queue, now):
        expired = {}
        while queue and queue[0][0] <= now:
            _, channel, _ = queue.popleft()
            expired[channel] = expired.get(channel, 0) + 1
            if key != channel:
                self._decrement(channel)
        if not queue:
            self._queues.pop(key, None)
        for channel, count in expired.items():
            self._stats["messages_expired"] += count
            self._stats["messages_dropped"] += count
            self._warnings.warn("expired", "{count} unread message(s) on {channel!r} expired",
                                count=count, channel=channel)
            # ASGI: a channel whose messages expire unread leaves its groups.
            for group in list(self._memberships.get(channel, ())):
                self._remove_member(group, channel)

    def _decrement(self, channel):
        n = self._specific_counts[channel] - 1
        if n:
            self._specific_counts[channel] = n
        else:
            del self._specific_counts[channel]

    def _sweep(self):
        """Expire unread messages and stale group members (garbage collection, not polling)."""
        now = self.reactor.seconds()
        for key, queue in list(self._queues.items()):
            if queue and queue[0][0] <= now:
                self._expire(key, queue, now)
        for group in list(self._groups):
            self._live_members(group)

    # -- housekeeping --------------------------------------------------------

    def flush(self):
        self._queues.clear()
        self._specific_counts.clear()
        self._groups.clear()
        self._memberships.clear()
        return defer.succeed(None)

    def receivable(self, channel):
        """Always True: this process holds every message."""
        return True

    def statistics(self):
        stats = dict(self._stats)
        depth = {}
        for key, queue in self._queues.items():
            for _, channel, _ in queue:
                depth[channel] = depth.get(channel, 0) + 1
        stats["queue_depth"] = depth
        stats["waiting_receivers"] = sum(len(w) for w in self._waiters.values())
        return defer.succeed(stats)
