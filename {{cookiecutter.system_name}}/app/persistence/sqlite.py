"""SQLite: one connection per thread, WAL journal, writes serialised by the busy timeout."""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .. import deadline
from ..migrate import MISSING_IN_SCHEMA
from ..migrate import READ_REVISION_SQL
from .database import Database
from .database import PerProcess
from .database import SchemaRevision
from .errors import Conflict
from .errors import DatabaseUnavailable
from .errors import InvalidValue
from .errors import QueryTimeout
from .errors import SchemaBehind
from .sql import Dialect

T = TypeVar("T")
# Below this much free space the store reports that it cannot write.
MIN_FREE_BYTES = 1024 * 1024


class SqliteDatabase(Database):
    """One connection per thread, WAL journal, writes serialised by SQLite's busy timeout."""

    def __init__(
        self, path: Path, statement_timeout_ms: int, migrate_on_start: bool = True
    ) -> None:
        super().__init__()
        self.dialect = Dialect("sqlite")
        self.path = path
        self._timeout_s = statement_timeout_ms / 1000
        self._threads = PerProcess(threading.local)  # each thread's connection and deadline
        self._prepared = PerProcess(self._prepare_file)
        self.schema = SchemaRevision(f"sqlite:///{path}", migrate_on_start, self._read_revision)

    def _thread(self) -> threading.local:
        """This thread's state, with its connection (opened on first use)."""
        state = self._threads.get()
        if getattr(state, "connection", None) is None:
            try:
                self._prepared.get()
                state.connection = self._connect(state)
            except (OSError, sqlite3.Error) as exc:
                raise DatabaseUnavailable(f"{self.path}: {exc}") from None
        return state

    def _connect(self, state: threading.local) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA synchronous=NORMAL")
        # Abort statements that run past their deadline, as PostgreSQL's statement_timeout
        # does; run() sets the deadline, the handler is installed once per connection.
        state.deadline = math.inf
        connection.set_progress_handler(lambda: time.monotonic() > state.deadline, 10_000)
        return connection

    def _prepare_file(self) -> bool:
        """Once per process: the WAL journal (retried while another process holds the lock,
        since switching the journal mode does not wait for the busy timeout)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        try:
            deadline_at = time.monotonic() + self._timeout_s
            while True:
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                    return True
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline_at:
                        raise
                    time.sleep(0.05)
        finally:
            connection.close()

    def _read_revision(self) -> str | None:
        """The database's schema revision; None before its first migration."""
        try:
            row = self._thread().connection.execute(READ_REVISION_SQL).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise DatabaseUnavailable(f"{self.path}: {exc}") from None
        return row[0] if row else None

    def run(
        self,
        work: Callable[[object], T],
        *,
        writes: bool = False,
        transaction: bool = False,
        probe: bool = False,
    ) -> T:
        state = self._thread()
        state.deadline = time.monotonic() + min(
            self._timeout_s, deadline.remaining(default=self._timeout_s)
        )
        self.schema.require_current()
        connection = state.connection
        cursor = connection.cursor()
        try:
            if transaction:
                cursor.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            result = work(cursor)
            if transaction:
                cursor.execute("COMMIT")
            return result
        except sqlite3.IntegrityError as exc:
            _sqlite_rollback(connection)
            if "UNIQUE" in str(exc):
                raise Conflict(str(exc)) from None
            raise InvalidValue(str(exc)) from None
        except sqlite3.OperationalError as exc:
            _sqlite_rollback(connection)
            if "interrupted" in str(exc):
                raise QueryTimeout(str(exc)) from None
            if "no such" in str(exc):  # table or column: a blueprint change not yet migrated
                raise SchemaBehind(MISSING_IN_SCHEMA) from None
            raise DatabaseUnavailable(str(exc)) from None
        except BaseException:
            _sqlite_rollback(connection)
            raise
        finally:
            cursor.close()

    def write_problem(self) -> str | None:
        directory = self.path.parent
        try:
            stats = os.statvfs(directory)
        except OSError as exc:
            return f"{directory}: {exc.strerror}"
        if stats.f_flag & os.ST_RDONLY:
            return "read-only file system"
        free = stats.f_bavail * stats.f_frsize
        if free < MIN_FREE_BYTES:
            return f"disk full ({free} bytes free)"
        for path in (self.path, directory):
            if path.exists() and not os.access(path, os.W_OK):
                return "read-only database file"
        return None

    def close(self) -> None:
        state = self._threads.current()
        if state is not None and getattr(state, "connection", None) is not None:
            state.connection.close()
        self._threads.forget()
        self._prepared.forget()
        self.schema.forget()


def _sqlite_rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.rollback()
