"""
The seed's "Authentication" and "Enforcing Ordering" chats, verbatim but for
the package name (``channels`` -> ``chanserve``) and the seed's missing import.
"""

from chanserve import Channel, Group  # noqa: F401  (as in the seed)
from chanserve.auth import (  # noqa: F401
    channel_session_user,
    channel_session_user_from_http,
    http_session_user,
    transfer_user,
)
from chanserve.routing import route
from chanserve.sessions import channel_session, enforce_ordering  # noqa: F401


# Connected to websocket.connect
@channel_session_user_from_http
def ws_add(message):
    # Add them to the right group
    Group("chat-%s" % message.user.username[0]).add(message.reply_channel)


# Connected to websocket.receive
@channel_session_user
def ws_message(message):
    Group("chat-%s" % message.user.username[0]).send(message.content)


# Connected to websocket.disconnect
@channel_session_user
def ws_disconnect(message):
    Group("chat-%s" % message.user.username[0]).discard(message.reply_channel)


# The "Enforcing Ordering" version.

# Connected to websocket.connect
@enforce_ordering(slight=True)
@channel_session_user_from_http
def ordered_ws_add(message):
    # Add them to the right group
    Group("chat-%s" % message.user.username[0]).add(message.reply_channel)


# Connected to websocket.receive
@enforce_ordering(slight=True)
@channel_session_user
def ordered_ws_message(message):
    Group("chat-%s" % message.user.username[0]).send(message.content)


# Connected to websocket.disconnect
@enforce_ordering(slight=True)
@channel_session_user
def ordered_ws_disconnect(message):
    Group("chat-%s" % message.user.username[0]).discard(message.reply_channel)


channel_routing = [
    route("websocket.connect", ws_add),
    route("websocket.receive", ws_message),
    route("websocket.disconnect", ws_disconnect),
]

ordered_channel_routing = [
    route("websocket.connect", ordered_ws_add),
    route("websocket.receive", ordered_ws_message),
    route("websocket.disconnect", ordered_ws_disconnect),
]

# For the end-to-end tests: the ordered chat under /ordered/, the plain one elsewhere.
e2e_routing = [
    route("websocket.connect", ordered_ws_add, path=r"^/ordered/"),
    route("websocket.receive", ordered_ws_message, path=r"^/ordered/"),
    route("websocket.disconnect", ordered_ws_disconnect, path=r"^/ordered/"),
] + channel_routing
