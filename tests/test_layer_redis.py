"""The Redis layer against real redis-servers: conformance, atomicity, sharding, resilience."""

import itertools
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from chanserve.exceptions import ChannelFull, LayerUnavailable
from chanserve.layers import RedisChannelLayer

from .layer_conformance import LayerConformanceMixin
from .redis_server import RedisServer, shared_server

_prefixes = itertools.count()


def unique_prefix():
    return f"t{os.getpid()}x{next(_prefixes)}"


class RedisLayerCase(unittest.TestCase):
    """Builds Redis layers on the shared test server and tears them down cleanly."""

    def layer(self, hosts=None, clock=None, **config):
        if hosts is None:
            hosts = [shared_server().url]
        config.setdefault("prefix", unique_prefix())
        layer = RedisChannelLayer(hosts=hosts, reactor=reactor, clock=clock, **config)
        layer.startService()
        self.addCleanup(self._stop, layer)
        return layer

    async def _stop(self, layer):
        if all(s.state == "up" for s in layer._shards):
            await layer.flush()
        await layer.stopService()


class RedisLayerConformanceTests(LayerConformanceMixin, RedisLayerCase):
    """RedisChannelLayer passes the layer conformance suite against a real redis-server."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)

    def make_layer(self, **config):
        return self.layer(clock=self.clock, **config)

    def advance(self, seconds):
        self.clock.advance(seconds)
