"""Settings that fail a system check: channel sessions on signed cookies (chanserve.E005)."""

from .settings import *  # noqa: F401,F403

CHANNEL_SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
