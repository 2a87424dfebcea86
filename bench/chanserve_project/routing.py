from chanserve.routing import route

from . import consumers as c

channel_routing = [
    route("websocket.receive", c.echo_receive, path=r"^/echo/$"),
    route("websocket.connect", c.fanout_connect, path=r"^/fanout/$"),
    route("websocket.receive", c.fanout_receive, path=r"^/fanout/$"),
    route("websocket.disconnect", c.fanout_disconnect, path=r"^/fanout/$"),
]

sync_routing = [
    route("websocket.receive", c.sync_echo_receive, path=r"^/echo/$"),
    route("websocket.connect", c.sync_fanout_connect, path=r"^/fanout/$"),
    route("websocket.receive", c.sync_fanout_receive, path=r"^/fanout/$"),
    route("websocket.disconnect", c.sync_fanout_disconnect, path=r"^/fanout/$"),
]
