# In settings.py
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chanserve.layers.RedisChannelLayer",
        "CONFIG": {
            "hosts": [("localhost", 6379)],
        },
        "ROUTING": "myproject.groups.routing.channel_routing",
    },
}
