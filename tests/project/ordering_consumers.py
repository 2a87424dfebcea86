"""
Consumers for the ordering tests: each run is recorded in the database.

``notify_when(socket, count)`` gives a Deferred that fires (on the reactor)
once ``count`` runs of ``socket``'s messages were recorded in this process.
"""

import functools
import os
import time
import threading

from twisted.internet import defer

from chanserve import Channel
from chanserve.routing import route
from chanserve.sessions import channel_session, enforce_ordering

from .ordering_models import OrderRecord

_lock = threading.Lock()
_counts = {}
_waiters = {}


def notify_when(socket, count, reactor):
    """A Deferred firing when ``count`` messages of ``socket`` have been recorded."""
    d = defer.Deferred()
    with _lock:
        if _counts.get(socket, 0) >= count:
            d.callback(None)
        else:
            _waiters[socket] = (count, d, reactor)
    return d


def _record(message, room=None):
    socket = message.reply_channel.name
    OrderRecord.objects.create(
        socket=socket, channel=message.channel.name, order=message.content["order"], room=room,
        pid=os.getpid())
    if message.content.get("announce"):
        # For tests in other processes: held, so it leaves once this consumer is done.
        Channel("ordering-done", channel_layer=message.channel_layer).send(
            {"socket": socket, "order": message.content["order"]})
    with _lock:
        n = _counts[socket] = _counts.get(socket, 0) + 1
        waiter = _waiters.get(socket)
        if waiter is not None and n >= waiter[0]:
            del _waiters[socket]
        else:
            waiter = None
    if waiter is not None:
        _count, d, reactor = waiter
        reactor.callFromThread(d.callback, None)


def _work(message, queries):
    """Some database work, as real consumers do (auth, lookups) before they save."""
    for _ in range(queries):
        OrderRecord.objects.filter(socket=message.reply_channel.name).count()


def record_unordered(message):
    """
    Records any websocket message with no ordering at all (the control case).

    Consumers take uneven time (a few extra queries for some orders), as
    real ones do, so concurrent runs overtake each other.
    """
    _work(message, message.content["order"] % 4)
    _record(message)


@enforce_ordering
def strict_consumer(message):
    """Any websocket message, strictly ordered."""
    _record(message)


def _slow_afterwards(consumer):
    """Slow work after the inner consumer returned (another decorator saving, say), on even orders."""
    @functools.wraps(consumer)
    def inner(message):
        result = consumer(message)
        if message.content["order"] % 2 == 0:
            time.sleep(0.03)  # test consumer only: hold this thread a while
        return result
    return inner


@_slow_afterwards
@enforce_ordering
def strict_replying_consumer(message):
    """Strictly ordered; replies with its order, then lingers after ordering is done."""
    message.reply_channel.send({"text": str(message.content["order"])})


@enforce_ordering(slight=True)
@channel_session
def slight_connect(message):
    """Saves the room from the path, like the seed's chat (after some other work)."""
    _work(message, 5)
    room = message.content["path"].strip("/")
    message.channel_session["room"] = room
    _record(message, room)


@enforce_ordering(slight=True)
@channel_session
def slight_receive(message):
    """Records the room the connect consumer saved (None if it wasn't there)."""
    _record(message, message.channel_session.get("room"))


@channel_session
def unordered_connect(message):
    """slight_connect without ordering (the control case)."""
    _work(message, 5)
    room = message.content["path"].strip("/")
    message.channel_session["room"] = room
    _record(message, room)


@channel_session
def unordered_receive(message):
    """slight_receive without ordering (the control case)."""
    _record(message, message.channel_session.get("room"))


strict_routing = [
    route("websocket.connect", strict_consumer),
    route("websocket.receive", strict_consumer),
    route("websocket.disconnect", strict_consumer),
]

strict_reply_routing = [
    route("websocket.connect", strict_replying_consumer),
    route("websocket.receive", strict_replying_consumer),
]

slight_routing = [
    route("websocket.connect", slight_connect),
    route("websocket.receive", slight_receive),
]

unordered_rooms_routing = [
    route("websocket.connect", unordered_connect),
    route("websocket.receive", unordered_receive),
]

unordered_routing = [
    route("websocket.connect", record_unordered),
    route("websocket.receive", record_unordered),
]

# Worker processes on Redis: strict under /strict/, slight under /slight/.
redis_routing = [
    route("websocket.connect", strict_consumer, path=r"^/strict/"),
    route("websocket.receive", strict_consumer, path=r"^/strict/"),
    route("websocket.connect", slight_connect, path=r"^/slight/"),
    route("websocket.receive", slight_receive, path=r"^/slight/"),
]
