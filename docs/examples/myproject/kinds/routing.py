from chanserve.routing import route
from myproject.kinds import consumers, decorators

channel_routing = [
    route("websocket.receive", consumers.plain, path=r"^/plain/$"),
    route("websocket.receive", consumers.coroutine, path=r"^/coroutine/$"),
    route("websocket.receive", consumers.inline_callbacks, path=r"^/inline/$"),
    route("websocket.receive", consumers.annotated, path=r"^/annotated/$"),
    route("websocket.receive", consumers.marked, path=r"^/marked/$"),
    route("websocket.receive", decorators.replies_then_done, path=r"^/done/$"),
]
