"""
Worker processes of the ordering tests on the Redis layer. ``CHANSERVE_TEST_REDIS``
is the server's URL, ``CHANSERVE_TEST_REDIS_PREFIX`` the key prefix and
``CHANSERVE_TEST_DB`` the SQLite file the processes share.
"""

import os

import django

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("CHANSERVE_TEST_REDIS", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("CHANSERVE_TEST_REDIS_PREFIX", "chanserve-test"),
            "capacity": 5000,
        },
        "ROUTING": "tests.project.ordering_consumers.redis_routing",
    },
}

# The worker processes share one SQLite file (in WAL mode, set by the test):
# commit without waiting for the disk (tests need no durability), take the
# write lock up front.
if django.VERSION >= (5, 1):
    DATABASES = {"default": dict(DATABASES["default"], OPTIONS={  # noqa: F405
        "init_command": "PRAGMA synchronous=OFF", "transaction_mode": "IMMEDIATE"})}
