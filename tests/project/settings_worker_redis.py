"""
The seed test project on the Redis layer (for ``--noworker`` / ``--worker-only``
end-to-end tests): ``CHANSERVE_TEST_REDIS`` is the server's URL and
``CHANSERVE_TEST_REDIS_PREFIX`` the key prefix.
"""

import os

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgi_redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("CHANSERVE_TEST_REDIS", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("CHANSERVE_TEST_REDIS_PREFIX", "chanserve-test"),
        },
        "ROUTING": "tests.project.seed_routing.channel_routing",
    },
}
