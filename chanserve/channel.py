"""
``Channel``, ``Group`` and ``Message``: what consumers and user code touch.

Sends made while a consumer runs are held and delivered in order when it
finishes (``immediately=True`` sends at once); the worker runs consumers
inside ``holding_sends()`` and flushes what they held.
"""

from contextvars import ContextVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure, threadable

from .layers._bridge import call_for_layer, call_layer
from .layers._settings import DEFAULT_CHANNEL_LAYER, get_channel_layer
from .layers._validation import validate_channel_name, validate_content, validate_group_name

_held_sends = ContextVar("chanserve_held_sends", default=None)
_log = Logger()


class HeldSends:
    """The sends one consumer made, in order, waiting for it to finish."""

    __slots__ = ("_sends",)

    def __init__(self):
        self._sends = []

    def __len__(self):
        return len(self._sends)

    def __iter__(self):
        return iter(self._sends)

    def add(self, layer, method, name, content):
        self._sends.append((layer, method, name, content))

    def discard(self):
        """Forget the held sends (the consumer's message will run again)."""
        self._sends = []

    def send_all(self, errback, *args):
        """
        Send everything held, in order, and forget it. Call on the reactor thread.

        A send that fails goes to ``errback(failure, *args)``. Returns the
        list of sends not complete yet, or ``None`` when every send completed
        at once (the usual case with the in-memory layer).
        """
        sends, self._sends = self._sends, []
        pending = None
        for layer, method, name, content in sends:
            # Held content was checked and copied when it was held: layers
            # that offer a trusted path (the in-memory one) skip doing it again.
            send = getattr(layer, method + "_validated", None) or getattr(layer, method)
            d = send(name, content)
            if d.called and not isinstance(getattr(d, "result", None), failure.Failure):
                continue
            d.addErrback(errback, *args)
            if not d.called:
                if pending is None:
                    pending = []
                pending.append(d)
        return pending

    def flush(self):
        """
        Send everything held, in order. Call on the reactor thread.

        Fires with a list of ``Failure``s of sends that failed (empty when all
        went through); it never fails itself.
        """
        failures = []
        pending = self.send_all(failures.append)
        if not pending:
            return defer.succeed(failures)
        return defer.DeferredList(pending).addCallback(lambda _: failures)


class holding_sends:
    """
    Hold ``Channel.send`` / ``Group.send`` made in this context; ``with
    holding_sends() as held`` gives the ``HeldSends``.
    """

    __slots__ = ("held", "_token")

    def __init__(self):
        self.held = HeldSends()

    def __enter__(self):
        self._token = _held_sends.set(self.held)
        return self.held

    def __exit__(self, *exc_info):
        _held_sends.reset(self._token)
        return False


def flush_held_sends():
    """
    Deliver what the running consumer has held so far, now, in order.

    For decorators that must publish a consumer's sends before they record
    it as finished (``enforce_ordering``: the next message's replies must
    not overtake this one's). In a worker thread it waits for the layer and
    returns the list of failures; on the reactor thread it returns a
    ``Deferred`` of that list. Outside a consumer it does nothing.
    """
    held = _held_sends.get()
    if held is None or not len(held):
        return defer.succeed([]) if threadable.isInIOThread() else []
    layer = next(iter(held))[0]
    failures = call_for_layer(layer, held.flush)
    if isinstance(failures, list):
        for f in failures:
            _log.warn("A held send failed when flushed early: {error}", error=f.getErrorMessage())
    return failures


def _send(layer, method, name, content, immediately):
    if not immediately:
        held = _held_sends.get()
        if held is not None:
            held.add(layer, method, name, validate_content(content))
            return defer.succeed(None) if threadable.isInIOThread() else None
    return call_layer(layer, method, name, content)


class Channel:
    """
    A named channel of a channel layer.

    ``send`` returns a ``Deferred`` on the reactor thread; in any other
    thread it blocks until the layer has the message and raises
    ``ChannelFull`` there.
    """

    __slots__ = ("name", "channel_layer")

    def __init__(self, name, alias=DEFAULT_CHANNEL_LAYER, channel_layer=None):
        self.name = validate_channel_name(name)
        self.channel_layer = channel_layer if channel_layer is not None else get_channel_layer(alias)

    @classmethod
    def _trusted(cls, name, channel_layer):
        self = cls.__new__(cls)
        self.name = name
        self.channel_layer = channel_layer
        return self

    def send(self, content, immediately=False):
        """Send ``content`` (a dict) on this channel."""
        return _send(self.channel_layer, "send", self.name, content, immediately)

    def __eq__(self, other):
        return isinstance(other, Channel) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Channel {self.name!r}>"


def _channel_name(channel):
    return channel.name if isinstance(channel, Channel) else validate_channel_name(channel)


class Group:
    """
    A named set of channels; a send reaches every member.

    ``add`` and ``discard`` happen at once; ``send`` is held inside a
    consumer like ``Channel.send``.
    """

    __slots__ = ("name", "channel_layer")

    def __init__(self, name, alias=DEFAULT_CHANNEL_LAYER, channel_layer=None):
        self.name = validate_group_name(name)
        self.channel_layer = channel_layer if channel_layer is not None else get_channel_layer(alias)

    def add(self, channel):
        """Add a ``Channel`` (or channel name) to the group."""
        return call_layer(self.channel_layer, "group_add", self.name, _channel_name(channel))

    def discard(self, channel):
        """Remove a ``Channel`` (or channel name) from the group."""
        return call_layer(self.channel_layer, "group_discard", self.name, _channel_name(channel))

    def channels(self):
        """The names of the group's live members."""
        return call_layer(self.channel_layer, "group_channels", self.name)

    def send(self, content, immediately=False):
        """Send ``content`` to every member."""
        return _send(self.channel_layer, "send_group", self.name, content, immediately)

    def __eq__(self, other):
        return isinstance(other, Group) and other.name == self.name

    def __hash__(self):
        return hash(("group", self.name))

    def __repr__(self):
        return f"<Group {self.name!r}>"


class Message:
    """
    One message handed to a consumer.

    ``content`` is the dict, ``channel`` the ``Channel`` it came on,
    ``reply_channel`` a ``Channel`` (or ``None``), ``channel_layer`` the
    layer. Decorators add ``channel_session``, ``http_session``, ``user``.
    """

    def __init__(self, content, channel_name, channel_layer):
        self.content = content
        self.channel_layer = channel_layer
        self.channel = Channel._trusted(channel_name, channel_layer)
        reply = content.get("reply_channel")
        self.reply_channel = Channel._trusted(reply, channel_layer) if reply else None

    def __getitem__(self, key):
        return self.content[key]

    def __contains__(self, key):
        return key in self.content

    def get(self, key, default=None):
        return self.content.get(key, default)

    def keys(self):
        return self.content.keys()

    def items(self):
        return self.content.items()

    def values(self):
        return self.content.values()

    def copy(self):
        """A new ``Message`` with a shallow copy of the content."""
        return Message(dict(self.content), self.channel.name, self.channel_layer)

    def __repr__(self):
        return f"<Message on {self.channel.name!r}>"
