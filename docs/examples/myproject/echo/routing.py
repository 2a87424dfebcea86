# In routing.py
from chanserve.routing import route
from myproject.echo.consumers import ws_message

channel_routing = [
    route("websocket.receive", ws_message),
]
