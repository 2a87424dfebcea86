from chanserve.sessions import enforce_ordering

@enforce_ordering
def ws_connect(message):
    pass

@enforce_ordering
def ws_message(message):
    # Each message sees every earlier one: they run strictly in order.
    seen = message.channel_session.get("seen", []) + [message.content['order']]
    message.channel_session["seen"] = seen
    message.reply_channel.send({"text": " ".join(map(str, seen))})

@enforce_ordering
def ws_disconnect(message):
    # Every consumer of an ordered socket is decorated, in the same mode.
    pass
