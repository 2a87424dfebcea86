"""
Settings of the Django comparison project run by runserver / twistd in
tests: DEBUG, static files (listed before chanserve, so chanserve's
runserver must take over staticfiles' one), the comparison URLs and the
admin.
"""

import os

from .settings import *  # noqa: F401,F403
from .settings import BASE_DIR, INSTALLED_APPS, MIDDLEWARE

DEBUG = True
ROOT_URLCONF = "tests.project.django_admin_urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    *(app for app in INSTALLED_APPS if app != "chanserve"),
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chanserve",
]
MIDDLEWARE = [*MIDDLEWARE, "django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "/static/"
STATICFILES_DIRS = [os.path.join(BASE_DIR, "django_static")]

# runserver's autoreload test: a module outside the checkout to touch.
if os.environ.get("CHANSERVE_DJANGO_WATCH"):
    import importlib

    importlib.import_module(os.environ["CHANSERVE_DJANGO_WATCH"])

# runworker tests: a Redis layer shared by runserver --noworker and runworker.
if os.environ.get("CHANSERVE_DJANGO_REDIS"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chanserve.layers.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["CHANSERVE_DJANGO_REDIS"]],
                       "prefix": os.environ.get("CHANSERVE_DJANGO_REDIS_PREFIX", "chanserve-django")},
            "ROUTING": "tests.project.routing.channel_routing",
        },
    }
