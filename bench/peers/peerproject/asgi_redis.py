import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peerproject.settings_redis")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from . import consumers  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_app,
    "websocket": URLRouter([
        path("echo/", consumers.RedisEcho.as_asgi()),
        path("fanout/", consumers.Fanout.as_asgi()),
    ]),
    "channel": ChannelNameRouter({"bench-echo": consumers.EchoWorker.as_asgi()}),
})
