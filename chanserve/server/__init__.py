"""
The interface server: HTTP and WebSocket on one port, speaking to a channel layer.

``InterfaceServer(layer, reactor, endpoints, ...)`` is a Twisted service; see
its docstring for the options.
"""

from ._service import InterfaceServer

__all__ = ["InterfaceServer"]
