"""Exceptions users of chanserve catch or raise."""


class ChannelFull(Exception):
    """A send would take a channel over its capacity; the message was not sent."""


class LayerUnavailable(Exception):
    """The channel layer cannot be reached right now (e.g. Redis is down); nothing was sent."""


class ConsumeLater(Exception):
    """Raised by a consumer: put this message back on its channel and run it later."""


class DenyConnection(Exception):
    """Raised by a ``websocket.connect`` consumer: refuse the handshake with HTTP 403."""


class RequestAborted(Exception):
    """The HTTP client went away (or stopped sending) before its request body was read."""


class RequestTimeout(RequestAborted):
    """The HTTP request body stopped arriving for longer than the body timeout."""


class ResponseLater(Exception):
    """Raised by a view: it will answer later on ``request.reply_channel`` (long polling)."""
