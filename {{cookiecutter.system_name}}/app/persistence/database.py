"""Databases: the interface the stores use, and the choice between PostgreSQL and SQLite.

Connections are created lazily in the process that uses them (PerProcess), so nothing opened
in a Gunicorn master (also with preload_app) is ever shared with a forked worker.
"""

from __future__ import annotations

import os
import threading
from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Generic
from typing import TypeVar

from .. import deadline
from ..settings import Settings
from .errors import DeadlineExceeded
from .sql import Dialect
from .sql import Table

T = TypeVar("T")


class Database(ABC):
    """Runs work(cursor): one statement on its own (each statement is atomic), or several in
    an explicit transaction. Single statements skip BEGIN and COMMIT, which on PostgreSQL are
    two network round trips per request."""

    dialect: Dialect

    def __init__(self) -> None:
        self.tables: list[Table] = []

    def register(self, table: Table) -> None:
        self.tables.append(table)

    @abstractmethod
    def run(
        self,
        work: Callable[[object], T],
        *,
        writes: bool = False,
        transaction: bool = False,
        probe: bool = False,
    ) -> T:
        """Run work(cursor) and return its result.

        writes: work changes data (a single write is not retried after a lost connection: it
        may have been applied). transaction: work runs several statements that must commit
        together. probe: a readiness check, on connections of its own so that it never waits
        behind requests.
        """

    @abstractmethod
    def write_problem(self) -> str | None:
        """Why the database cannot take writes now (read-only, disk full), or None."""

    @abstractmethod
    def close(self) -> None:
        """Release connections held by this process."""


class PerProcess(Generic[T]):
    """A value made on first use in each process; a forked child never uses its parent's."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: T | None = None
        self._pid = 0

    def get(self) -> T:
        if self._pid == os.getpid():
            return self._value  # type: ignore[return-value]
        # Another thread may be making it (connecting, say): wait no longer than the deadline.
        if not self._lock.acquire(timeout=deadline.remaining(default=60.0) or 0.001):
            raise DeadlineExceeded("waiting for another thread to reach the database")
        try:
            if self._pid != os.getpid():
                self._value = self._make()
                self._pid = os.getpid()
            return self._value  # type: ignore[return-value]
        finally:
            self._lock.release()

    def current(self) -> T | None:
        """The value if this process made one, else None."""
        return self._value if self._pid == os.getpid() else None

    def forget(self) -> None:
        self._pid = 0
        self._value = None


def open_database(settings: Settings) -> Database:
    """PostgreSQL when a postgresql:// URL is set, else SQLite (sqlite:///path or DATA_DIR)."""
    url = settings.database_url
    timeout_ms = settings.statement_timeout_ms
    if url and url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresDatabase  # only a PostgreSQL service loads psycopg2

        sizes = (settings.pool_min_size, settings.pool_max_size)
        return PostgresDatabase(
            url, *sizes, timeout_ms, settings.request_timeout_ms, settings.system_name
        )
    sqlite_path = settings.sqlite_path
    if url and url.startswith("sqlite:///"):
        sqlite_path = Path(url[len("sqlite:///") :])
    from .sqlite import SqliteDatabase

    return SqliteDatabase(sqlite_path, timeout_ms)
