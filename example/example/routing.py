"""
Channel routing of the example chat (the seed's final form).

- ``ws://host/chat/`` is the seed's echo server, for its JavaScript console
  snippet.
- ``ws://host/chat/<room>/`` joins a room; the page at the same HTTP path
  (served by Django) shows it.
- ``chat-messages`` saves and broadcasts every chat message, whoever sent it.
"""

from chanserve.routing import include, route

from chat import consumers

ROOM = r"^/(?P<room>[-a-zA-Z0-9_]+)/$"

room_routing = [
    route("websocket.connect", consumers.ws_connect, path=ROOM),
    route("websocket.receive", consumers.ws_message, path=ROOM),
    route("websocket.disconnect", consumers.ws_disconnect, path=ROOM),
]

channel_routing = [
    route("websocket.receive", consumers.ws_echo, path=r"^/chat/$"),
    include(room_routing, path=r"^/chat"),
    route("chat-messages", consumers.msg_consumer),
]
