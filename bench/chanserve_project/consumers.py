"""
chanserve consumers with the peers' logic: /echo/ sends every frame back;
/fanout/ members join one group on connect, a frame from any member goes
to all. Async ones run on the reactor (like the peers' async consumers);
the plain functions are the seed's style and run in the thread pool.
"""

from chanserve import Group

GROUP = "bench"


def _frame(content):
    if content.get("text") is not None:
        return {"text": content["text"]}
    return {"bytes": content["bytes"]}


async def echo_receive(message):
    await message.reply_channel.send(_frame(message.content))


async def fanout_connect(message):
    await Group(GROUP).add(message.reply_channel)


async def fanout_receive(message):
    await Group(GROUP).send(_frame(message.content))


async def fanout_disconnect(message):
    await Group(GROUP).discard(message.reply_channel)


def sync_echo_receive(message):
    message.reply_channel.send(_frame(message.content))


def sync_fanout_connect(message):
    Group(GROUP).add(message.reply_channel)


def sync_fanout_receive(message):
    Group(GROUP).send(_frame(message.content))


def sync_fanout_disconnect(message):
    Group(GROUP).discard(message.reply_channel)
