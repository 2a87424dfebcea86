"""
The Django bridge: ``AsgiRequest``, ``AsgiHandler`` and ``view_consumer``.

(Work in progress: ``view_consumer`` is the default ``http.request``
consumer the worker routes to.)
"""

__all__ = ["AsgiHandler", "AsgiRequest", "view_consumer"]


def view_consumer(message):
    """The default ``http.request`` consumer: Django's view layer."""
    from django.http import HttpResponse
    response = HttpResponse("chanserve: the Django view layer is not wired in yet", status=503)
    for chunk in ({"status": response.status_code,
                   "headers": [[k.encode("ascii"), v.encode("latin1")] for k, v in response.items()],
                   "content": response.content, "more_content": False},):
        message.reply_channel.send(chunk, immediately=True)
