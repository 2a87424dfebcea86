"""
Consumers of the example chat: the seed's final version.

Rooms come from the WebSocket path (``/chat/<room>/``, see ``routing.py``);
the user comes from the Django login (the session cookie sent with the
WebSocket handshake); every message goes through the ``chat-messages``
channel, which saves it as a ``ChatMessage`` and broadcasts it to the room's
group; the room consumers run strictly in order for each socket.
"""

import json

from chanserve import Channel, Group
from chanserve.auth import channel_session_user, channel_session_user_from_http
from chanserve.security import allowed_hosts_only
from chanserve.sessions import enforce_ordering

from .models import ChatMessage

MAX_MESSAGE = 2000


def room_group(room):
    return Group(f"chat-{room}")


# Connected to chat-messages
def msg_consumer(message):
    """Save a message, then send it to every socket in its room."""
    chat = ChatMessage.objects.create(
        room=message.content["room"],
        message=message.content["message"][:MAX_MESSAGE],
        user_id=message.content.get("user_id"),
        username=message.content.get("username", ""),
    )
    room_group(chat.room).send({"text": json.dumps(chat.as_dict())})


# Connected to websocket.connect on /chat/<room>/
@enforce_ordering
@allowed_hosts_only
@channel_session_user_from_http
def ws_connect(message, room):
    """
    Only logged-in users, on pages of this site, may join; remember the room
    and join its group. (``allowed_hosts_only`` refuses handshakes whose
    ``Origin`` is not in ``ALLOWED_HOSTS``: a page on another site could
    otherwise open a socket with the visitor's cookies.)
    """
    if not message.user.is_authenticated:
        message.reply_channel.send({"accept": False})
        return
    message.channel_session["room"] = room
    room_group(room).add(message.reply_channel)
    message.reply_channel.send({"accept": True})


# Connected to websocket.receive on /chat/<room>/
@enforce_ordering
@channel_session_user
def ws_message(message, room):
    """Queue the message on chat-messages: saving and broadcasting happen there."""
    text = message.content.get("text")
    if not text or not text.strip():
        return
    Channel("chat-messages").send({
        "room": message.channel_session["room"],
        "message": text,
        "user_id": message.user.pk,
        "username": message.user.get_username(),
    })


# Connected to websocket.disconnect on /chat/<room>/
@enforce_ordering
@channel_session_user
def ws_disconnect(message, room):
    room_group(message.channel_session.get("room", room)).discard(message.reply_channel)


# Connected to websocket.receive on /chat/ (the seed's echo server)
def ws_echo(message):
    message.reply_channel.send({
        "text": message.content["text"],
    })
