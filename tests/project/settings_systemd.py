"""Settings for the systemd end-to-end tests: the base project with a tiny raw HTTP consumer."""

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "tests.project.routing_systemd.channel_routing",
    },
}
