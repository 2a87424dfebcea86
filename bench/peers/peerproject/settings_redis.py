"""The peers' project on channels_redis 4 (CHANSERVE_BENCH_REDIS=redis://host:port):
a Daphne process for the sockets and a `runworker bench-echo` process, so that
the echo crosses processes as it does in chanserve (interface -> worker -> interface)."""

import os

from .settings import *  # noqa: F401,F403

INSTALLED_APPS = INSTALLED_APPS + ["channels"]  # noqa: F405  (for runworker)
ASGI_APPLICATION = "peerproject.asgi_redis.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("CHANSERVE_BENCH_REDIS", "redis://127.0.0.1:6379/0")]},
    }
}
