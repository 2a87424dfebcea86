"""A small Django project for tests; ``ensure_database()`` migrates it once per process."""

import threading

_migrated = False
_lock = threading.Lock()


def ensure_database():
    """Create the test database tables (once per process)."""
    global _migrated
    with _lock:
        if _migrated:
            return
        from django.core.management import call_command
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        _migrated = True
