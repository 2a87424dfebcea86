"""Routing for the systemd end-to-end tests: every HTTP request gets a fixed answer naming the process."""

import os

from chanserve.routing import route


def http_consumer(message):
    message.reply_channel.send({
        "status": 200,
        "headers": [[b"content-type", b"text/plain"]],
        "content": f"activated pid={os.getpid()}".encode(),
        "more_content": False,
    })


channel_routing = [route("http.request", http_consumer)]
