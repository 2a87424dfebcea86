"""The peers' project (Daphne / uvicorn + Channels 4, gunicorn): shared site
settings plus Channels 4's ASGI application and an in-memory layer."""

from benchsettings import *  # noqa: F401,F403

ASGI_APPLICATION = "peerproject.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
