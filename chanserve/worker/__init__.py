"""
The worker: receives messages from the channel layer and runs consumers.

A consumer is ``callable(message, **kwargs)``. Plain functions (and
``route_class`` classes) run in the worker's thread pool, with Django's
``close_old_connections`` around each call, so the ORM is safe to use.
``async def`` consumers, and plain functions marked ``@reactor_consumer``
(for ones that return a ``Deferred``), run on the reactor and must not
block. A plain function that nevertheless returns a coroutine or a
``Deferred`` has it awaited on the reactor.
"""

from ._service import WorkerService, reactor_consumer, runs_on_reactor, select_channels

__all__ = ["WorkerService", "reactor_consumer", "runs_on_reactor", "select_channels"]
