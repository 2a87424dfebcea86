"""
Settings of the chanserve example chat.

``make run`` uses the in-memory channel layer (one process) and SQLite in
``example/db.sqlite3``. ``CHANSERVE_LAYER=redis`` switches to the Redis layer
(``CHANSERVE_REDIS_URL``, default ``redis://127.0.0.1:6379/0``) so that
interface servers and workers can run as separate processes
(``make run-redis``).
"""

import os

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An example: never use this key, or DEBUG, in production.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chanserve-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "chanserve",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHANSERVE_EXAMPLE_DB", os.path.join(BASE_DIR, "db.sqlite3")),
        # Worker threads (and, with Redis, worker processes) write at once.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel sessions need a store the server can write: the database is fine.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "login"

USE_TZ = True
TIME_ZONE = "UTC"

if os.environ.get("CHANSERVE_LAYER", "inmemory") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chanserve.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("CHANSERVE_REDIS_URL", "redis://127.0.0.1:6379/0")],
                "prefix": "chanserve-example",
            },
            "ROUTING": "example.routing.channel_routing",
        },
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chanserve.layers.InMemoryChannelLayer",
            "ROUTING": "example.routing.channel_routing",
        },
    }
