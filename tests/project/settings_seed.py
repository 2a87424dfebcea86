"""Settings of the seed test project (served by ``twistd chanserve`` in end-to-end tests)."""

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "tests.project.seed_routing.channel_routing",
    },
}
