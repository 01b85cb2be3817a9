"""Connections: a psycopg2 ThreadedConnectionPool for PostgreSQL, one connection per thread
for SQLite. Both are created lazily in the process that uses them, so nothing opened in a
Gunicorn master (also with preload_app) is ever shared with a forked worker.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import zlib
from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..settings import Settings
from .errors import Conflict
from .errors import DatabaseUnavailable
from .errors import InvalidValue
from .errors import QueryTimeout
from .sql import Dialect
from .sql import Table

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5


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
        self, work: Callable[[object], T], *, writes: bool = False, transaction: bool = False
    ) -> T:
        """Run work(cursor) and return its result.

        writes: work changes data (a single write is not retried after a lost connection: it
        may have been applied). transaction: work runs several statements that must commit
        together.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections held by this process."""


class PostgresDatabase(Database):
    def __init__(
        self, url: str, min_size: int, max_size: int, statement_timeout_ms: int, name: str
    ) -> None:
        super().__init__()
        import psycopg2
        import psycopg2.errors
        import psycopg2.pool

        self._psycopg2 = psycopg2
        self.dialect = Dialect("postgresql")
        self._url = url
        self._name = name
        self._sizes = (min_size, max_size)
        self._options = f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC"
        self._lock = threading.Lock()
        self._pool = None
        self._pid = 0
        self._connection_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    def _current_pool(self):
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                # A pool inherited through fork is dropped unused: its sockets are the parent's.
                self._pool = None
                self._pool = self._open_pool()
                self._pid = os.getpid()
            return self._pool

    def _open_pool(self):
        try:
            pool = self._psycopg2.pool.ThreadedConnectionPool(
                *self._sizes,
                dsn=self._url,
                options=self._options,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=self._name,
            )
        except self._psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(_first_line(exc)) from None
        try:
            self._create_tables(pool)
        except BaseException:
            pool.closeall()
            raise
        return pool

    def _create_tables(self, pool) -> None:
        """Idempotent, and serialised by an advisory lock when many workers start at once."""
        connection = pool.getconn()
        try:
            with connection, connection.cursor() as cursor:
                lock_key = zlib.crc32(",".join(t.name for t in self.tables).encode())
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
                for table in self.tables:
                    for statement in table.create_statements():
                        cursor.execute(statement)
        except self._connection_errors as exc:
            pool.putconn(connection, close=True)
            raise DatabaseUnavailable(_first_line(exc)) from None
        pool.putconn(connection)

    def _discard_pool(self, pool) -> None:
        """After a broken connection, start afresh: the other idle ones are likely dead too."""
        with self._lock:
            if self._pool is pool:
                self._pool = None

    def run(
        self, work: Callable[[object], T], *, writes: bool = False, transaction: bool = False
    ) -> T:
        errors = self._psycopg2.errors
        for attempt in (1, 2):
            pool = self._current_pool()
            try:
                connection = pool.getconn()
            except self._psycopg2.pool.PoolError as exc:
                raise DatabaseUnavailable(str(exc)) from None
            except self._connection_errors as exc:
                self._discard_pool(pool)
                raise DatabaseUnavailable(_first_line(exc)) from None
            if not connection.autocommit:
                connection.autocommit = True
            committing = False
            try:
                with connection.cursor() as cursor:
                    if transaction:
                        cursor.execute("BEGIN")
                        result = work(cursor)
                        committing = True
                        cursor.execute("COMMIT")
                    else:
                        committing = writes  # a lone write commits as it runs
                        result = work(cursor)
            except errors.QueryCanceled as exc:
                _rollback(connection)
                pool.putconn(connection)
                raise QueryTimeout(_first_line(exc)) from None
            except errors.UniqueViolation as exc:
                _rollback(connection)
                pool.putconn(connection)
                raise Conflict(getattr(exc.diag, "constraint_name", None) or "unique") from None
            except (errors.DataError, errors.IntegrityError) as exc:
                _rollback(connection)
                pool.putconn(connection)
                raise InvalidValue(_first_line(exc)) from None
            except self._connection_errors as exc:
                broken = connection.closed != 0
                _put_back(pool, connection, close=True)
                if broken:
                    self._discard_pool(pool)
                # Work that had not reached its commit cannot have been applied, so one retry
                # on a fresh connection is safe; a write that may have committed is not retried.
                if broken and not committing and attempt == 1:
                    continue
                raise DatabaseUnavailable(_first_line(exc)) from None
            except BaseException:
                _rollback(connection)
                _put_back(pool, connection, close=connection.closed != 0)
                raise
            _put_back(pool, connection, close=False)
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.closeall()
            self._pool = None


def _rollback(connection) -> None:
    """End a failed explicit transaction (a no-op outside one)."""
    try:
        if connection.get_transaction_status() != 0:  # not idle
            connection.cursor().execute("ROLLBACK")
    except Exception:  # a broken connection cannot roll back; it is discarded by the caller
        pass


def _put_back(pool, connection, *, close: bool) -> None:
    try:
        pool.putconn(connection, close=close)
    except Exception:  # the pool was replaced and closed meanwhile
        connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SqliteDatabase(Database):
    """One connection per thread, WAL journal, writes serialised by SQLite's busy timeout."""

    def __init__(self, path: Path, statement_timeout_ms: int) -> None:
        super().__init__()
        self.dialect = Dialect("sqlite")
        self.path = path
        self._timeout_s = statement_timeout_ms / 1000
        self._local = threading.local()
        self._ready_lock = threading.Lock()
        self._ready_pid = 0

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            # Abort statements that run past their deadline, as PostgreSQL's statement_timeout
            # does; run() sets the deadline, the handler is installed once per connection.
            local = self._local
            local.deadline = math.inf
            connection.set_progress_handler(lambda: time.monotonic() > local.deadline, 10_000)
            self._prepare_file(connection)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(f"{self.path}: {exc}") from None
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _prepare_file(self, connection: sqlite3.Connection) -> None:
        """Once per process: WAL journal and the tables (retried while another process holds
        the lock, since switching the journal mode does not wait for the busy timeout)."""
        with self._ready_lock:
            if self._ready_pid == os.getpid():
                return
            deadline = time.monotonic() + self._timeout_s
            while True:
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            try:
                for table in self.tables:
                    for statement in table.create_statements():
                        connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            self._ready_pid = os.getpid()

    def run(
        self, work: Callable[[object], T], *, writes: bool = False, transaction: bool = False
    ) -> T:
        connection = self._connection()
        self._local.deadline = time.monotonic() + self._timeout_s
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
            raise DatabaseUnavailable(str(exc)) from None
        except BaseException:
            _sqlite_rollback(connection)
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            connection.close()
        self._local = threading.local()


def _sqlite_rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.rollback()


def open_database(settings: Settings) -> Database:
    """PostgreSQL when a postgresql:// URL is set, else SQLite (sqlite:///path or DATA_DIR)."""
    url = settings.database_url
    timeout_ms = settings.statement_timeout_ms
    if url and url.startswith(("postgresql://", "postgres://")):
        sizes = (settings.pool_min_size, settings.pool_max_size)
        return PostgresDatabase(url, *sizes, timeout_ms, settings.system_name)
    sqlite_path = settings.sqlite_path
    if url and url.startswith("sqlite:///"):
        sqlite_path = Path(url[len("sqlite:///") :])
    return SqliteDatabase(sqlite_path, timeout_ms)
