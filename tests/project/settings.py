"""Base settings of the test project; areas import these and add their own."""

import atexit
import os
import shutil
import tempfile

import django

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = "chanserve-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.project.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "chanserve",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
def _test_database():
    # One fresh database per test run, handed down to the twistd and
    # runserver processes the tests start (they inherit the environment).
    path = os.environ.get("CHANSERVE_TEST_DB")
    if not path:
        directory = tempfile.mkdtemp(prefix="chanserve-test-")
        atexit.register(shutil.rmtree, directory, True)
        path = os.environ["CHANSERVE_TEST_DB"] = os.path.join(directory, "db.sqlite3")
    return path


DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _test_database(),
    }
}
if django.VERSION >= (5, 1):
    # Tests need no durability; thousands of tiny commits go much faster.
    DATABASES["default"]["OPTIONS"] = {"init_command": "PRAGMA synchronous=OFF"}
SESSION_ENGINE = "django.contrib.sessions.backends.db"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "tests.project.routing.channel_routing",
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
