"""
Routing of the seed test project: the seed's consumers side by side, told
apart by path (the consumers themselves are verbatim), plus the worker's
error cases. Everything else falls through to the default routes.
"""

from chanserve.routing import include, route

from . import seed_chat, seed_echo, worker_consumers

chat_routing = [
    route("websocket.connect", seed_chat.ws_add),
    route("websocket.receive", seed_chat.ws_message),
    route("websocket.disconnect", seed_chat.ws_disconnect),
]

channel_routing = [
    # You can use a string import path as the first argument as well.
    route("http.request", "tests.project.seed_http.http_consumer", path=r"^/hello/"),
    route("websocket.receive", seed_echo.ws_message, path=r"^/echo/$"),
    include(chat_routing, path=r"^/chat/$"),
    include("tests.project.worker_consumers.error_routing", path=r"^/errors"),
    route("http.request", worker_consumers.http_slow, path=r"^/slow/$"),
    route("websocket.disconnect", worker_consumers.goodbye, path=r"^/goodbye/$"),
    route("http.request", worker_consumers.chat_size, path=r"^/chat-size/$"),
    route("websocket.receive", worker_consumers.async_echo, path=r"^/async/$"),
    route("websocket.connect", worker_consumers.room_connect,
          path=r"^/rooms/(?P<room>[a-z]+)/$"),
]
