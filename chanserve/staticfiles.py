"""Serving ``STATIC_URL`` in development, as ``staticfiles``' runserver does."""

from urllib.parse import urlparse

from django.contrib.staticfiles.handlers import StaticFilesHandlerMixin

from .handler import AsgiHandler


class StaticFilesHandler(StaticFilesHandlerMixin, AsgiHandler):
    """
    An ``AsgiHandler`` that serves requests under ``STATIC_URL`` from the
    static files finders and hands every other message to ``application``
    (another handler, usually the default view handler).
    """

    def __init__(self, application):
        self.application = application
        self.base_url = urlparse(self.get_base_url())
        super().__init__()

    def __call__(self, message):
        content = getattr(message, "content", message)
        path = content["path"]
        root = (content.get("root_path") or "").rstrip("/")
        if root and path.startswith(root + "/"):
            path = path[len(root):]
        if not self._should_handle(path):
            return self.application(message)
        return super().__call__(message)
