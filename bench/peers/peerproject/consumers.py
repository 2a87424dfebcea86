"""Channels 4 async consumers with the same logic as bench/chanserve_project."""

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

GROUP = "bench"


class Echo(AsyncWebsocketConsumer):
    """Sends every frame back."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class Fanout(AsyncWebsocketConsumer):
    """Joins one group on connect; a frame from any member goes to all."""

    async def connect(self):
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(GROUP, {"type": "bench.message", "text": text_data})

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


class RedisEcho(AsyncWebsocketConsumer):
    """Echo through a worker process: frame -> "bench-echo" channel -> back."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.send("bench-echo", {
            "type": "echo", "reply": self.channel_name, "text": text_data})

    async def echo_reply(self, event):
        await self.send(text_data=event["text"])


class EchoWorker(AsyncConsumer):
    """The worker side (`runworker bench-echo`): send the frame back to its socket."""

    async def echo(self, event):
        await self.channel_layer.send(event["reply"], {"type": "echo.reply", "text": event["text"]})
