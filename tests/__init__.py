"""chanserve's tests (run with ``trial tests``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

import django  # noqa: E402

django.setup()
