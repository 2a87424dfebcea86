from chanserve.sessions import enforce_ordering

@enforce_ordering
def ws_connect(message):
    pass

@enforce_ordering
def ws_message(message):
    message.reply_channel.send({"text": "%d" % message.content['order']})
