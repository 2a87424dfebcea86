"""
What the worker says on a reply channel besides the consumer's own sends:
the implicit WebSocket accept and the error replies (the protocol agreed
with the interface server).
"""

from ..exceptions import DenyConnection

ACCEPT = {"accept": True}
REJECT = {"accept": False}
CLOSE_INTERNAL_ERROR = {"close": 1011}
# An HTTP response that failed after it started: the interface server closes
# the connection without ending the body, so the client sees it cut short.
ABORT_RESPONSE = {"more_content": False, "abort": True}


def _http_500():
    return {
        "status": 500,
        "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
        "content": b"Internal Server Error",
        "more_content": False,
    }


def _to_reply(held, reply_name):
    """The contents of the held ``Channel.send``s addressed to ``reply_name``."""
    for _layer, method, name, content in held:
        if method == "send" and name == reply_name:
            yield content


def connect_answered(held, reply_name):
    """
    ``"accept"``, ``"reject"`` or ``None``: what the held sends of a
    ``websocket.connect`` consumer already told the client.
    """
    for content in _to_reply(held, reply_name):
        if content.get("accept") is False or content.get("close"):
            return "reject"
        if content.get("accept") is True or "text" in content or "bytes" in content:
            return "accept"
    return None


def response_state(held, reply_name):
    """``None``, ``"started"`` or ``"finished"``: how far the held sends took an HTTP response."""
    started = False
    for content in _to_reply(held, reply_name):
        started = started or "status" in content
        if started and (content.get("abort") or not content.get("more_content", False)):
            return "finished"
    return "started" if started else None


def replies_after(channel, held, reply_name, failure):
    """
    The messages the worker sends on ``reply_name`` after flushing the held
    sends of a consumer of ``channel`` that raised ``failure`` (or ``None``).
    """
    if channel == "websocket.connect":
        if failure is None:
            return [] if connect_answered(held, reply_name) else [dict(ACCEPT)]
        if failure.check(DenyConnection):
            return [dict(REJECT)]
        return [dict(CLOSE_INTERNAL_ERROR)]
    if failure is None:
        return []
    if channel == "http.request":
        state = response_state(held, reply_name)
        if state == "finished":
            return []
        return [dict(ABORT_RESPONSE)] if state == "started" else [_http_500()]
    if channel == "websocket.receive":
        return [dict(CLOSE_INTERNAL_ERROR)]
    return []
