"""chanserve: Django Channels' original model on Twisted."""

__version__ = "0.1.0.dev0"

from .channel import Channel, Group  # noqa: E402

__all__ = ["Channel", "Group", "__version__"]
