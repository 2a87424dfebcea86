"""Routing for the Autobahn|Testsuite run (``make conformance``): echo every WebSocket message."""

from chanserve.routing import route


async def echo(message):
    """Send a frame back exactly as it came (text as text, binary as binary)."""
    content = message.content
    if "text" in content:
        message.reply_channel.send({"text": content["text"]})
    else:
        message.reply_channel.send({"bytes": content["bytes"]})


channel_routing = [route("websocket.receive", echo)]
