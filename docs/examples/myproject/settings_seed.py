# In settings.py: the seed's backend names still work
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": "myproject.hello.routing.channel_routing",
    },
}
