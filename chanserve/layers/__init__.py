"""
Channel layers: where messages wait between interface servers and workers.

``InMemoryChannelLayer`` serves one process; ``RedisChannelLayer`` joins many
processes and hosts through Redis. Both provide ``IChannelLayer``.
"""

from ._interfaces import IChannelLayer
from ._inmemory import InMemoryChannelLayer
from ._settings import (
    BACKEND_ALIASES,
    DEFAULT_CHANNEL_LAYER,
    build_channel_layer,
    channel_layers,
    get_channel_layer,
    layer_settings,
)
from ._validation import validate_channel_name, validate_content, validate_group_name

__all__ = [
    "IChannelLayer",
    "InMemoryChannelLayer",
    "RedisChannelLayer",
    "BACKEND_ALIASES",
    "DEFAULT_CHANNEL_LAYER",
    "build_channel_layer",
    "channel_layers",
    "get_channel_layer",
    "layer_settings",
    "validate_channel_name",
    "validate_content",
    "validate_group_name",
]


def __getattr__(name):
    if name == "RedisChannelLayer":
        from ._redis import RedisChannelLayer
        return RedisChannelLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
