"""The peers' project on channels_redis 4 (CHANSERVE_BENCH_REDIS=redis://host:port)."""

import os

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("CHANSERVE_BENCH_REDIS", "redis://127.0.0.1:6379/0")]},
    }
}
