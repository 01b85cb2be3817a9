"""Persistence: stores over PostgreSQL (DATABASE_URL) or SQLite (the default).

The asynchronous API lives in app.persistence.aio, imported only by code that uses it, so the
Flask path never loads asyncio.
"""

from .app_store import AppStore
from .app_store import NoApplication
from .database import Database
from .database import open_database
from .errors import Conflict
from .errors import DatabaseUnavailable
from .errors import DeadlineExceeded
from .errors import IdempotencyKeyReused
from .errors import InvalidValue
from .errors import QueryTimeout
from .errors import SchemaBehind
from .errors import StorageError
from .errors import WriteOutcomeUnknown
from .store import SyncStore

__all__ = [
    "AppStore",
    "Conflict",
    "Database",
    "DatabaseUnavailable",
    "DeadlineExceeded",
    "IdempotencyKeyReused",
    "InvalidValue",
    "NoApplication",
    "QueryTimeout",
    "SchemaBehind",
    "StorageError",
    "SyncStore",
    "WriteOutcomeUnknown",
    "open_database",
]
