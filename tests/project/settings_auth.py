"""Settings for the auth end-to-end tests: the seed's authenticated chats, login views."""

from .settings import *  # noqa: F401,F403

ROOT_URLCONF = "tests.project.auth_urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "tests.project.auth_chat.e2e_routing",
    },
}
