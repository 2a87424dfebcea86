"""
Testing consumers without a server.

``ConsumerClient`` runs a project's routing over an in-memory channel layer
and drives the worker's dispatch by hand, synchronously, in the calling
thread: routing, held sends, the implicit WebSocket accept and the error
replies all behave as under ``twistd chanserve``::

    from chanserve.testing import ConsumerClient

    class ChatTests(TestCase):
        def test_echo(self):
            with ConsumerClient() as client:       # CHANNEL_LAYERS["default"]["ROUTING"]
                client.send_and_consume("websocket.receive", {"path": "/", "text": "hi"})
                self.assertEqual(client.receive(), {"text": "hi"})

Inside the ``with`` block (or between ``install()`` and ``uninstall()``)
the client's layer is the process's ``"default"`` layer, so ``Channel`` and
``Group`` in consumers use it. Time is a ``task.Clock``: ``advance(s)``
moves it (``ConsumeLater`` retries, expiry). ``async def`` consumers run to
completion only when everything they await is already fired.
"""

import secrets

from twisted.internet import task

from .layers import InMemoryChannelLayer, channel_layers
from .layers._bridge import receive_now
from .routing import Router, load_routing
from .worker import WorkerService

__all__ = ["ConsumerClient"]


class _TestReactor(task.Clock):
    """A ``Clock`` whose ``callFromThread`` runs the call at once."""

    running = False

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class _CallingThreadPool:
    """Runs "thread pool" work at once, in the calling thread."""

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        try:
            result, ok = f(*args, **kwargs), True
        except BaseException:
            from twisted.python.failure import Failure
            result, ok = Failure(), False
        onResult(ok, result)


class ConsumerClient:
    """
    A fake client and worker around an in-memory layer.

    ``routing`` is a routing list or ``Router``; by default the project's
    ``CHANNEL_LAYERS[alias]["ROUTING"]`` with the default routes.
    Messages the client sends get ``reply_channel`` set to the client's own
    channel (unless given), which ``receive()`` reads.
    """

    def __init__(self, routing=None, *, alias="default", defaults=True, capacity=1000):
        self.clock = _TestReactor()
        self.alias = alias
        self.layer = InMemoryChannelLayer(reactor=self.clock, capacity=capacity)
        if routing is None:
            router = load_routing(alias, defaults=defaults)
        elif isinstance(routing, Router):
            router = routing
        else:
            router = Router(routing, defaults=defaults)
        self.router = router
        self.worker = WorkerService(self.layer, self.clock, router,
                                    threadpool=_CallingThreadPool(), retry_delay=0.01)
        self.reply_channel = "chanserve.testclient!" + secrets.token_urlsafe(12)
        self._saved = None

    # -- installing the layer ------------------------------------------------

    def install(self):
        """Make this client's layer the process's ``"default"`` (and ``alias``) layer."""
        if self._saved is None:
            self._saved = {name: channel_layers._layers.get(name)
                           for name in {"default", self.alias}}
            for name in self._saved:
                channel_layers._layers[name] = self.layer
        return self

    def uninstall(self):
        """Put back the layers ``install`` replaced."""
        if self._saved is not None:
            for name, layer in self._saved.items():
                if layer is None:
                    channel_layers._layers.pop(name, None)
                else:
                    channel_layers._layers[name] = layer
            self._saved = None

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()

    # -- messages ------------------------------------------------------------

    def send(self, channel, content=None, **extra):
        """Put a message on ``channel`` (``reply_channel`` defaults to the client's)."""
        content = dict(content or {}, **extra)
        content.setdefault("reply_channel", self.reply_channel)
        _result(self.layer.send(channel, content))

    def consume(self, channel=None):
        """
        Run the consumer of the next message on ``channel`` (or on any
        routed channel); False when there was none.
        """
        channels = [channel] if channel is not None else self.router.channels
        if not channels:
            return False
        item = receive_now(self.layer, channels)
        if item is None:
            return False
        self.worker._dispatch(*item)
        return True

    def send_and_consume(self, channel, content=None, **extra):
        """``send`` then ``consume`` that message."""
        self.send(channel, content, **extra)
        return self.consume(channel)

    def consume_all(self, limit=1000):
        """Consume until no routed channel has a message; the number consumed."""
        n = 0
        while n < limit and self.consume():
            n += 1
        return n

    def receive(self, channel=None):
        """The next message on the client's reply channel (or ``channel``), or None."""
        name = channel or self.reply_channel
        key = name[: name.index("!") + 1] if "!" in name else name
        item = receive_now(self.layer, [key])
        return None if item is None else item[1]

    def replies(self):
        """Every message waiting on the client's reply channel, in order."""
        out = []
        while True:
            message = self.receive()
            if message is None:
                return out
            out.append(message)

    def advance(self, seconds):
        """Move the client's clock (``ConsumeLater`` retries run when due)."""
        self.clock.advance(seconds)

    def statistics(self):
        """The worker's counters (consumed, failed, unroutable...)."""
        return self.worker.statistics()


def _result(d):
    box = []
    d.addBoth(box.append)
    if not box:
        raise RuntimeError("the in-memory layer did not answer synchronously")
    result = box[0]
    from twisted.python.failure import Failure
    if isinstance(result, Failure):
        result.raiseException()
    return result
