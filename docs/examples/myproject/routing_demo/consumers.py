from django.http import HttpResponse

from chanserve import Group
from chanserve.auth import channel_session_user_from_http
from chanserve.handler import AsgiHandler


def poll_consumer(message):
    response = HttpResponse("poll: %s" % message.content['body'].decode())
    for chunk in AsgiHandler.encode_response(response):
        message.reply_channel.send(chunk)


def chat_connect(message, room):
    Group("chat-%s" % room).add(message.reply_channel)


def chat_disconnect(message):
    pass


# Connected to websocket.connect
@channel_session_user_from_http
def ws_add(message, room):
    # Add them to the right group
    Group("chat-%s" % room).add(message.reply_channel)
