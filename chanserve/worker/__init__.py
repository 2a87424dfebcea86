"""
The worker: receives messages from the channel layer and runs consumers.

A consumer is ``callable(message, **kwargs)``. Plain functions (and
``route_class`` classes) run in the worker's thread pool, with Django's
``close_old_connections`` around each call, so they may block and use the
ORM. These run on the reactor and must not block: ``async def`` consumers,
``@defer.inlineCallbacks`` functions, functions annotated ``-> Deferred``,
and any function marked ``@reactor_consumer`` (use it for a plain function
that returns a ``Deferred``). A plain function that nevertheless returns a
coroutine or a ``Deferred`` from the thread pool has it awaited on the
reactor (a ``Deferred`` made in a thread must be fired on the reactor).
"""

from ._service import WorkerService, reactor_consumer, runs_on_reactor, select_channels

__all__ = ["WorkerService", "reactor_consumer", "runs_on_reactor", "select_channels"]
