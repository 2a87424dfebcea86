"""The chanserve app's system checks (chanserve.checks)."""

import sys
import types

from django.contrib.sessions.backends import signed_cookies
from django.core import checks
from django.test.utils import override_settings
from twisted.trial import unittest

SIGNED = "django.contrib.sessions.backends.signed_cookies"
GOOD = {"BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "tests.project.routing.channel_routing"}


def fake_engine(testcase, name, store=None):
    """Register a session engine module ``name`` whose ``SessionStore`` is ``store`` (if any)."""
    module = types.ModuleType(name)
    if store is not None:
        module.SessionStore = store
    sys.modules[name] = module
    testcase.addCleanup(sys.modules.pop, name, None)
    return name


class SignedSubclassStore(signed_cookies.SessionStore):
    """A project's own signed-cookie store: still nothing stored on the server."""


def ids(**settings):
    """The ids of chanserve's check messages under ``settings``."""
    with override_settings(**settings):
        return sorted(m.id for m in checks.run_checks(tags=["chanserve"]))


class ChannelLayerCheckTests(unittest.SynchronousTestCase):
    """CHANNEL_LAYERS problems are check errors naming the setting."""

    def test_base_settings_pass(self):
        """The test project's settings raise nothing."""
        self.assertEqual(ids(), [])

    def test_seed_backend_alias(self):
        """The seed's asgiref.inmemory.ChannelLayer name is accepted."""
        self.assertEqual(ids(CHANNEL_LAYERS={"default": dict(GOOD, BACKEND="asgiref.inmemory.ChannelLayer")}), [])

    def test_missing(self):
        """No CHANNEL_LAYERS at all is E001."""
        self.assertEqual(ids(CHANNEL_LAYERS=None), ["chanserve.E001"])

    def test_no_default(self):
        """CHANNEL_LAYERS without a 'default' alias is E001."""
        self.assertEqual(ids(CHANNEL_LAYERS={"other": GOOD}), ["chanserve.E001"])

    def test_not_a_dict(self):
        """A layer entry that is not a dict, or lacks BACKEND, is E001."""
        self.assertEqual(ids(CHANNEL_LAYERS={"default": GOOD, "b": "x"}), ["chanserve.E001"])
        self.assertEqual(ids(CHANNEL_LAYERS={"default": {"ROUTING": GOOD["ROUTING"]}}),
                         ["chanserve.E001"])

    def test_bad_backend(self):
        """A BACKEND that cannot be imported is E002, with the path in the message."""
        with override_settings(CHANNEL_LAYERS={"default": dict(GOOD, BACKEND="nowhere.Layer")}):
            [message] = checks.run_checks(tags=["chanserve"])
        self.assertEqual(message.id, "chanserve.E002")
        self.assertIn("nowhere.Layer", message.msg)
        self.assertIn("CHANNEL_LAYERS['default']['BACKEND']", message.msg)

    def test_bad_config(self):
        """A CONFIG key the backend does not take is E003."""
        self.assertEqual(ids(CHANNEL_LAYERS={"default": dict(GOOD, CONFIG={"hosts": ["x"]})}),
                         ["chanserve.E003"])

    def test_bad_routing(self):
        """A ROUTING that cannot be imported, or is not a routing, is E004."""
        self.assertEqual(ids(CHANNEL_LAYERS={"default": dict(GOOD, ROUTING="tests.nowhere.routing")}),
                         ["chanserve.E004"])
        self.assertEqual(ids(CHANNEL_LAYERS={"default": dict(GOOD, ROUTING="tests.project.settings.DEBUG")}),
                         ["chanserve.E004"])

    def test_missing_routing_is_fine(self):
        """No ROUTING means the default routes only: no message."""
        self.assertEqual(ids(CHANNEL_LAYERS={"default": {"BACKEND": GOOD["BACKEND"]}}), [])


class SessionEngineCheckTests(unittest.SynchronousTestCase):
    """Channel sessions need a server-side session engine."""

    def test_signed_channel_session_engine(self):
        """CHANNEL_SESSION_ENGINE set to signed cookies is E005."""
        self.assertEqual(ids(CHANNEL_SESSION_ENGINE=SIGNED), ["chanserve.E005"])

    def test_signed_session_engine(self):
        """SESSION_ENGINE signed cookies with no CHANNEL_SESSION_ENGINE is W001."""
        self.assertEqual(ids(SESSION_ENGINE=SIGNED), ["chanserve.W001"])

    def test_signed_session_with_channel_engine(self):
        """Signed-cookie HTTP sessions are fine when channel sessions use another engine."""
        self.assertEqual(ids(SESSION_ENGINE=SIGNED,
                             CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.db"), [])

    def test_signed_subclass_channel_session_engine(self):
        """A CHANNEL_SESSION_ENGINE whose store subclasses the signed-cookie one is E005."""
        engine = fake_engine(self, "chanserve_test_signed_subclass", SignedSubclassStore)
        with override_settings(CHANNEL_SESSION_ENGINE=engine):
            [message] = checks.run_checks(tags=["chanserve"])
        self.assertEqual(message.id, "chanserve.E005")
        self.assertIn(engine, message.msg)

    def test_signed_subclass_session_engine(self):
        """SESSION_ENGINE with a signed-cookie subclass store and no CHANNEL_SESSION_ENGINE is W001."""
        engine = fake_engine(self, "chanserve_test_signed_subclass", SignedSubclassStore)
        self.assertEqual(ids(SESSION_ENGINE=engine), ["chanserve.W001"])

    def test_unimportable_channel_session_engine(self):
        """A CHANNEL_SESSION_ENGINE that cannot be imported is E005, naming the path."""
        with override_settings(CHANNEL_SESSION_ENGINE="tests.nowhere.sessions"):
            [message] = checks.run_checks(tags=["chanserve"])
        self.assertEqual(message.id, "chanserve.E005")
        self.assertIn("tests.nowhere.sessions", message.msg)

    def test_unimportable_session_engine(self):
        """An unimportable SESSION_ENGINE with no CHANNEL_SESSION_ENGINE is W001."""
        with override_settings(SESSION_ENGINE="tests.nowhere.sessions"):
            [message] = checks.run_checks(tags=["chanserve"])
        self.assertEqual(message.id, "chanserve.W001")
        self.assertIn("tests.nowhere.sessions", message.msg)

    def test_engine_without_session_store(self):
        """A CHANNEL_SESSION_ENGINE module with no SessionStore class is E005, not a crash."""
        engine = fake_engine(self, "chanserve_test_no_store")
        self.assertEqual(ids(CHANNEL_SESSION_ENGINE=engine), ["chanserve.E005"])

    def test_server_side_subclass_passes(self):
        """A store subclassing a server-side one (here the cache store) is fine."""
        from django.contrib.sessions.backends import cache

        class CacheStore(cache.SessionStore):
            pass
        engine = fake_engine(self, "chanserve_test_cache_subclass", CacheStore)
        self.assertEqual(ids(CHANNEL_SESSION_ENGINE=engine), [])
