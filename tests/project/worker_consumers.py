"""Consumers for the worker's end-to-end tests: failures, rejects, async, routing kwargs."""

import os
import time

from chanserve import Group
from chanserve.exceptions import DenyConnection
from chanserve.routing import route


def http_raises(message):
    raise RuntimeError("http_raises: this consumer always fails")


def ws_raises(message):
    raise RuntimeError("ws_raises: this consumer always fails")


def connect_rejects(message):
    raise DenyConnection()


def connect_rejects_by_message(message):
    message.reply_channel.send({"accept": False})


async def async_echo(message):
    """An ``async def`` consumer: runs on the reactor."""
    await message.reply_channel.send({"text": "async: " + message.content["text"]})


def room_connect(message, room):
    """A connect consumer taking a routing kwarg: greets the socket with its room."""
    message.reply_channel.send({"text": "room=" + room})


def goodbye(message):
    """A disconnect consumer that leaves a trace ($CHANSERVE_TEST_GOODBYE): for stop tests."""
    time.sleep(0.05)
    with open(os.environ["CHANSERVE_TEST_GOODBYE"], "a") as f:
        f.write("%s %s\n" % (message.content["path"], message.content["code"]))


def http_slow(message):
    """Answers after a second (in a worker thread): for graceful-stop tests."""
    from twisted.logger import Logger
    Logger().info("http_slow: started")
    time.sleep(1.0)
    message.reply_channel.send({"status": 200, "headers": [[b"content-type", b"text/plain"]],
                                "content": b"slow but complete", "more_content": False})


def chat_size(message):
    """Answers with the number of members of the seed chat's group (for discard tests)."""
    size = len(Group("chat").channels())
    message.reply_channel.send({"status": 200, "headers": [[b"content-type", b"text/plain"]],
                                "content": str(size).encode(), "more_content": False})


error_routing = [
    route("http.request", http_raises, path=r"^/http/$"),
    route("websocket.receive", ws_raises, path=r"^/ws/$"),
    route("websocket.connect", connect_rejects, path=r"^/deny/$"),
    route("websocket.connect", connect_rejects_by_message, path=r"^/reject/$"),
]
