"""Settings for ``make conformance``: the test project with the echo routing and roomy capacities."""

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "tests.project.conformance_routing.channel_routing",
        "CONFIG": {"capacity": 10000},
    },
}
