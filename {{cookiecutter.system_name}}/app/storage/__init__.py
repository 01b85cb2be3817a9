"""Persistence: stores over PostgreSQL (DATABASE_URL) or SQLite (the default)."""

from .aio import AsyncStore
from .database import Database
from .database import open_database
from .errors import Conflict
from .errors import DatabaseUnavailable
from .errors import InvalidValue
from .errors import QueryTimeout
from .errors import StorageError
from .store import SyncStore

__all__ = [
    "AsyncStore",
    "Conflict",
    "Database",
    "DatabaseUnavailable",
    "InvalidValue",
    "QueryTimeout",
    "StorageError",
    "SyncStore",
    "open_database",
]
