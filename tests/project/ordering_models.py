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
    pid = models.IntegerField(default=0)

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
        table = OrderRecord._meta.db_table
        with connection.cursor() as cursor:
            exists = table in connection.introspection.table_names(cursor)
            columns = ({c.name for c in connection.introspection.get_table_description(
                cursor, table)} if exists else set())
        wanted = {f.column for f in OrderRecord._meta.local_fields}
        with connection.schema_editor() as editor:
            if exists and columns != wanted:
                # Left by an older version of these tests in a kept database.
                editor.delete_model(OrderRecord)
                exists = False
            if not exists:
                editor.create_model(OrderRecord)
        _ready = True


CREATE_TABLE_SQL = (
    'CREATE TABLE IF NOT EXISTS "chanserve_ordering_record" ('
    '"id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "socket" varchar(100) NOT NULL, '
    '"channel" varchar(100) NOT NULL, "order" integer NOT NULL, "room" varchar(100) NULL, '
    '"pid" integer NOT NULL)'
)
"""The table as SQLite DDL, for preparing a database file other processes will share."""


def orders(socket):
    """The ``order`` of each recorded run of ``socket``'s messages, in the order they ran."""
    return list(OrderRecord.objects.filter(socket=socket).order_by("id")
                .values_list("order", flat=True))
