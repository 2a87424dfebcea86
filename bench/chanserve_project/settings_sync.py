"""The same, with the seed's plain-function consumers (run in the thread pool)."""

from .settings import *  # noqa: F401,F403

CHANNEL_LAYERS["default"]["ROUTING"] = "chanserve_project.routing.sync_routing"  # noqa: F405
