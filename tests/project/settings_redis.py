"""Test settings with the Redis layer; ``CHANSERVE_REDIS_URL`` and ``CHANSERVE_REDIS_PREFIX`` pick the server and key prefix."""

import os

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgi_redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("CHANSERVE_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("CHANSERVE_REDIS_PREFIX", "chanserve"),
        },
        "ROUTING": "tests.project.routing.channel_routing",
    },
}
