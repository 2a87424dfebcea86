"""Settings whose ROUTING cannot be imported (start-up must fail with one clear line)."""

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "tests.project.no_such_module.channel_routing",
    },
}
