"""twistd plugin: ``twistd chanserve`` (the real work lives in chanserve.tap)."""

from twisted.application.service import ServiceMaker

chanserve = ServiceMaker(
    "chanserve",
    "chanserve.tap",
    "Serve a Django project over HTTP and WebSocket with channels, groups and workers.",
    "chanserve",
)
