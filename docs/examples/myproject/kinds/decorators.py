import functools

from chanserve.channel import flush_held_sends


# A decorator that must publish the consumer's replies before it goes on.
def then_done(func):
    @functools.wraps(func)
    def inner(message, **kwargs):
        result = func(message, **kwargs)
        flush_held_sends()  # the consumer's held sends go out now, in order
        message.reply_channel.send({"text": "done"}, immediately=True)
        return result
    return inner


@then_done
def replies_then_done(message):
    message.reply_channel.send({"text": "reply"})
