"""The ``chanserve`` Django app: system checks and the runserver/runworker commands."""

from django.apps import AppConfig, apps


class ChanserveConfig(AppConfig):
    """Registers chanserve's system checks; makes ``runserver`` chanserve's."""

    name = "chanserve"
    label = "chanserve"
    verbose_name = "chanserve"

    def ready(self):
        from . import checks  # noqa: F401  (registers the checks)
        _take_over_staticfiles_runserver()


def _take_over_staticfiles_runserver():
    """
    Make ``manage.py runserver`` chanserve's even when
    ``django.contrib.staticfiles`` comes before ``chanserve`` in
    ``INSTALLED_APPS``.

    Django picks the command of the first app listing it; when that is
    staticfiles, its command module is the one loaded, so its ``Command``
    is pointed at chanserve's (which serves static files the same way).
    """
    names = [config.name for config in apps.get_app_configs()]
    static = "django.contrib.staticfiles"
    if static not in names or names.index(static) > names.index("chanserve"):
        return
    from django.contrib.staticfiles.management.commands import runserver as static_runserver

    from .management.commands.runserver import Command
    static_runserver.Command = Command
