"""chanserve's project: shared site settings plus chanserve and async
(reactor) consumers with the same logic as the peers' Channels 4 consumers."""

from benchsettings import *  # noqa: F401,F403

INSTALLED_APPS = INSTALLED_APPS + ["chanserve"]  # noqa: F405
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "chanserve_project.routing.channel_routing",
    }
}
