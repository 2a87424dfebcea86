# In settings.py
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.InMemoryChannelLayer",
        "ROUTING": "myproject.hello.routing.channel_routing",
    },
}
