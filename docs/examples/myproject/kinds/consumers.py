from twisted.internet import defer
from twisted.python import threadable

from chanserve.worker import reactor_consumer


def where():
    return "reactor" if threadable.isInIOThread() else "thread pool"


# Runs in the worker's thread pool: may block, may use the ORM.
def plain(message):
    message.reply_channel.send({"text": where()})


# These run on the reactor and must not block.
async def coroutine(message):
    await message.reply_channel.send({"text": where()})


@defer.inlineCallbacks
def inline_callbacks(message):
    yield message.reply_channel.send({"text": where()})


def annotated(message) -> defer.Deferred:
    return message.reply_channel.send({"text": where()})


@reactor_consumer
def marked(message):
    return message.reply_channel.send({"text": where()})
