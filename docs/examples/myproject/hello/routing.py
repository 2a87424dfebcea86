# In routing.py
from chanserve.routing import route
channel_routing = [
    route("http.request", "myproject.hello.consumers.http_consumer"),
]
