"""Building layers from CHANNEL_LAYERS, with one clear error per mistake."""

from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from twisted.internet import task
from twisted.trial import unittest

from chanserve.layers import (
    InMemoryChannelLayer,
    build_channel_layer,
    channel_layers,
    get_channel_layer,
)


def _layers(**conf):
    return {"CHANNEL_LAYERS": {"default": conf}}


class BuildLayerTests(unittest.SynchronousTestCase):
    """build_channel_layer reads BACKEND and CONFIG, accepting the seed's backend names."""

    def test_in_memory(self):
        """The chanserve backend path builds an InMemoryChannelLayer with CONFIG applied."""
        with override_settings(**_layers(BACKEND="chanserve.layers.InMemoryChannelLayer",
                                         CONFIG={"expiry": 5, "capacity": 7})):
            layer = build_channel_layer("default", reactor=task.Clock())
        self.assertIsInstance(layer, InMemoryChannelLayer)
        self.assertEqual(layer.expiry, 5)
        self.assertEqual(layer.capacity("x"), 7)
        self.assertEqual(layer.alias, "default")

    def test_seed_alias(self):
        """asgiref.inmemory.ChannelLayer (the seed's name) is the in-memory layer."""
        with override_settings(**_layers(BACKEND="asgiref.inmemory.ChannelLayer")):
            self.assertIsInstance(build_channel_layer(reactor=task.Clock()), InMemoryChannelLayer)

    def assertMessage(self, settings, *fragments, alias="default"):
        with override_settings(**settings):
            e = self.assertRaises(ImproperlyConfigured, build_channel_layer, alias, task.Clock())
        for fragment in fragments:
            self.assertIn(fragment, str(e))
        self.assertNotIn("\n", str(e))

    def test_errors_name_the_setting(self):
        """Each misconfiguration is one line naming the setting at fault."""
        self.assertMessage({"CHANNEL_LAYERS": None}, "CHANNEL_LAYERS")
        self.assertMessage({"CHANNEL_LAYERS": {"other": {}}}, "CHANNEL_LAYERS", "'default'")
        self.assertMessage(_layers(ROUTING="x"), "['BACKEND']", "missing")
        self.assertMessage(_layers(BACKEND="no.such.Layer"), "['BACKEND']", "no.such.Layer")
        self.assertMessage(_layers(BACKEND="chanserve.layers.Nope"), "['BACKEND']")
        self.assertMessage(_layers(BACKEND="chanserve.layers.InMemoryChannelLayer",
                                   CONFIG={"bogus": 1}), "['CONFIG']", "bogus")
        self.assertMessage(_layers(BACKEND="chanserve.layers.InMemoryChannelLayer",
                                   CONFIG={"capacity": -1}), "['CONFIG']", "capacity")


class RegistryTests(unittest.SynchronousTestCase):
    """get_channel_layer returns the registered layer of an alias."""

    def test_register(self):
        """A registered layer is the one get_channel_layer returns."""
        layer = InMemoryChannelLayer(reactor=task.Clock())
        channel_layers.register("tests-registry", layer)
        self.addCleanup(channel_layers.unregister, "tests-registry")
        self.assertIs(get_channel_layer("tests-registry"), layer)
        self.assertEqual(layer.alias, "tests-registry")
