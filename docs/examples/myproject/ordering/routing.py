from chanserve.routing import include, route
from myproject.ordering import consumers, strict

strict_routing = [
    route("websocket.connect", strict.ws_connect),
    route("websocket.receive", strict.ws_message),
    route("websocket.disconnect", strict.ws_disconnect),
]

channel_routing = [
    include(strict_routing, path=r"^/strict/$"),
    route("websocket.connect", consumers.ws_add),
    route("websocket.receive", consumers.ws_message),
    route("websocket.disconnect", consumers.ws_disconnect),
]
