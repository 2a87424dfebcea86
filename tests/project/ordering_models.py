"""A table the ordering tests' consumers write to (created on demand, no app needed)."""

import threading

from django.db import connection, models

from . import ensure_database


class OrderRecord(models.Model):
    """One consumer run: which socket, which message, what it saw."""

    socket = models.CharField(max_length=100, db_index=True)
    channel = models.CharField(max_length=100)
    order = models.IntegerField()
    room = models.CharField(max_length=100, null=True)

    class Meta:
        app_label = "chanserve_ordering_tests"
        db_table = "chanserve_ordering_record"


_lock = threading.Lock()
_ready = False


def ensure_table():
    """Migrate the test database and create the records table (once per process)."""
    global _ready
    ensure_database()
    with _lock:
        if _ready:
            return
        if OrderRecord._meta.db_table not in connection.introspection.table_names():
            with connection.schema_editor() as editor:
                editor.create_model(OrderRecord)
        _ready = True


def orders(socket):
    """The ``order`` of each recorded run of ``socket``'s messages, in the order they ran."""
    return list(OrderRecord.objects.filter(socket=socket).order_by("id")
                .values_list("order", flat=True))
