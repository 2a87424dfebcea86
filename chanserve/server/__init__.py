"""
The interface server: HTTP and WebSocket on one port, speaking to a channel layer.

``InterfaceServer(layer, reactor, endpoints, ...)`` is a Twisted service
(see its docstring for every option). Its shape:

- Every connection starts as HTTP/1.x (a strict parser: malformed request
  lines, header fields or chunked framing get 400 and a closed connection;
  header names containing ``_`` are dropped). A request becomes an
  ``http.request`` message; a body larger than ``body_chunk_size`` is
  streamed as ``http.request.body`` chunks on ``body_channel`` while the
  client is still uploading, and reading the socket stops while the layer
  says that channel is full. Responses stream from ``more_content``
  chunks (chunked transfer encoding when there is no Content-Length).
  Keep-alive and pipelining work; requests on one connection are handled in
  order, one at a time.
- A ``GET`` with ``Upgrade: websocket`` becomes a WebSocket through
  autobahn. The opening handshake waits for the connect consumer: the first
  reply with ``accept: True``, ``text`` or ``bytes`` accepts (with
  ``subprotocol``, or else the first subprotocol the client offered);
  ``accept: False`` or ``close`` before that refuses with 403, as does no
  answer within ``websocket_connect_timeout``. permessage-deflate is
  negotiated, pings detect dead peers, a message over
  ``websocket_max_message`` closes with 1009, invalid UTF-8 with 1007, a
  full ``websocket.receive`` with 1013.
- Every reply channel is ``chanserve.<process token>!<random>``; one receive
  loop reads the process prefix and hands each message to its connection
  through a dict. A group send that reaches many sockets of this process as
  the same message is framed once.
- Output flow control: the ``http.request`` message says ``response_acks:
  True``; a response message carrying ``ack_channel`` is acknowledged there
  with ``{"ok": True}`` once it is written and the connection's unsent
  output is below the transport's high-water mark (the connection is then
  the transport's streaming producer), or ``{"closed": True}`` when the
  client is gone. ``view_consumer`` uses this to keep two chunks in flight,
  so a slow reader of a huge response costs the server almost nothing.
  A reply to a WebSocket with more than ``websocket_max_buffer`` bytes
  unsent closes it with 1013 (logged and counted).
- ``stopService`` stops listening, closes idle connections, lets in-flight
  responses finish (up to ``shutdown_timeout``) and closes WebSockets with
  1001.
"""

from ._service import InterfaceServer

__all__ = ["InterfaceServer"]
