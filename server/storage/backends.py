"""Which store ``--database`` names: a ``postgresql://`` URL, or the path of an SQLite file.

The composition root (``server/runtime/app.py``) opens the store here; every other layer
sees only the :class:`~server.storage.base.Store` interface. The PostgreSQL driver is
imported only when a URL asks for it, so the embedded default starts without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.storage.base import Store

SCHEMES = ("postgresql://", "postgres://")


def is_url(database: str) -> bool:
    return database.startswith(SCHEMES)


def describe(database: str) -> str:
    """``database`` as it may appear in a log line or a message (no password)."""
    if not is_url(database):
        return database
    from server.storage.postgres import redact

    return redact(database)


def open_store(database: str, *, pool_size: int = 4, op_timeout_s: float = 3.0,
               **options: Any) -> Store:
    """The store ``database`` names, migrated, not started. Raises StoreUnavailable when a
    PostgreSQL server cannot be reached, OSError or sqlite3.Error for an unusable file,
    RuntimeError for a schema newer than this server's."""
    if is_url(database):
        from server.storage.postgres import PostgresStore

        return PostgresStore(database, pool_size=pool_size, op_timeout_s=op_timeout_s,
                             **options)
    from server.storage.sqlite import SqliteStore

    return SqliteStore(Path(database), **options)
