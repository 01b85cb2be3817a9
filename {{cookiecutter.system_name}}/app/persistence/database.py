"""Connections: a small pool per process for PostgreSQL, one connection per thread for SQLite.

Both are created lazily in the process that uses them, so nothing opened in a Gunicorn
master (also with preload_app) is ever shared with a forked worker.

Every wait on PostgreSQL (connecting, sending, waiting for a result, waiting for a free
connection) ends at the request's deadline (app.deadline), whatever the database or the
network does: psycopg2 hands its waits to wait_with_deadline(). The server's statement
timeout still cancels slow statements first; TCP keepalives and tcp_user_timeout let the
kernel notice a peer that is gone while a connection sits idle in the pool.
"""

from __future__ import annotations

import math
import os
import select
import sqlite3
import threading
import time
import zlib
from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Generic
from typing import TypeVar

from .. import deadline
from ..settings import Settings
from .errors import Conflict
from .errors import DatabaseUnavailable
from .errors import DeadlineExceeded
from .errors import InvalidValue
from .errors import QueryTimeout
from .errors import WriteOutcomeUnknown
from .sql import Dialect
from .sql import Table

T = TypeVar("T")
# Idle pooled connections: the kernel probes the peer after 10 s of silence, every 5 s, and
# gives up after 3 unanswered probes.
TCP_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5}
TCP_KEEPALIVE_COUNT = 3
# Threads that may check readiness at once (the worker's probe threads).
PROBE_CONNECTIONS = 2
# Below this much free space a SQLite store reports that it cannot write.
MIN_FREE_BYTES = 1024 * 1024


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


def wait_with_deadline(connection) -> None:
    """psycopg2's wait callback: poll the connection until done or the deadline passes.

    Raising here makes psycopg2 mark the connection broken, so it is never used again.
    """
    import psycopg2.extensions as extensions

    expires = deadline.expires()
    if expires is None:
        expires = time.monotonic() + _default_wait_s
    poller = None
    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        left = expires - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the database did not answer before the deadline")
        if poller is None:
            poller = select.poll()
        else:
            poller.unregister(connection.fileno())
        event = select.POLLIN if state == extensions.POLL_READ else select.POLLOUT
        poller.register(connection.fileno(), event)
        poller.poll(math.ceil(left * 1000))


_default_wait_s = 10.0  # outside a request; PostgresDatabase sets it to REQUEST_TIMEOUT_MS


class ConnectionPool:
    """Up to max_size connections of one process, min_size of them kept when idle.

    Connecting happens outside the lock, so a database that does not answer never makes one
    thread wait for another's connection attempt. A thread that finds every connection in
    use waits for one, until its deadline.
    """

    def __init__(self, connect: Callable[[], object], min_size: int, max_size: int) -> None:
        self._connect = connect
        self._min_size = min_size
        self._max_size = max_size
        self._idle: list = []
        self._open = 0
        self._freed = threading.Condition()

    def take(self):
        if deadline.remaining(default=_default_wait_s) <= 0:
            # Waited for a thread past its deadline: never start work that cannot finish.
            raise DeadlineExceeded("the request's deadline passed before it reached the database")
        with self._freed:
            while True:
                while self._idle:
                    connection = self._idle.pop()
                    if not _looks_closed(connection):
                        return connection
                    self._open -= 1
                    connection.close()
                if self._open < self._max_size:
                    self._open += 1
                    break
                if not self._freed.wait(deadline.remaining(default=_default_wait_s)):
                    raise DatabaseUnavailable(f"all {self._max_size} connections are in use")
        try:
            return self._connect()
        except BaseException:
            with self._freed:
                self._open -= 1
                self._freed.notify()
            raise

    def give_back(self, connection, *, discard: bool = False) -> None:
        with self._freed:
            if discard or connection.closed or len(self._idle) >= self._min_size:
                self._open -= 1
                connection.close()
            else:
                self._idle.append(connection)
            self._freed.notify()

    def discard_idle(self) -> None:
        """After a broken connection the idle ones are likely dead too: close them."""
        with self._freed:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for connection in idle:
            connection.close()

    def close(self) -> None:
        self.discard_idle()


def _looks_closed(connection) -> bool:
    """An idle connection with something to read was closed by the server (a restart or
    an idle timeout sends an error, then end of file). Found before a write is sent on it,
    so that such a write is never of unknown outcome."""
    if connection.closed:
        return True
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class PostgresDatabase(Database):
    def __init__(
        self,
        url: str,
        min_size: int,
        max_size: int,
        statement_timeout_ms: int,
        request_timeout_ms: int,
        name: str,
    ) -> None:
        super().__init__()
        import psycopg2
        import psycopg2.errors
        import psycopg2.extensions

        global _default_wait_s
        _default_wait_s = request_timeout_ms / 1000
        psycopg2.extensions.set_wait_callback(wait_with_deadline)
        self._psycopg2 = psycopg2
        self.dialect = Dialect("postgresql")
        self._connect_arguments = {
            "dsn": url,
            "options": f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC",
            "application_name": name,
            **TCP_KEEPALIVE,
            "keepalives_count": TCP_KEEPALIVE_COUNT,
            # Data sent but not acknowledged for this long: the connection is dead.
            "tcp_user_timeout": request_timeout_ms,
        }
        self._pool = PerProcess(lambda: ConnectionPool(self._connect, min_size, max_size))
        self._probe_pool = PerProcess(lambda: ConnectionPool(self._connect, 1, PROBE_CONNECTIONS))
        self._tables_created = PerProcess(self._create_tables)
        self._connection_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    def _connect(self):
        try:
            connection = self._psycopg2.connect(**self._connect_arguments)
        except self._psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(_first_line(exc)) from None
        connection.autocommit = True
        return connection

    def _create_tables(self) -> bool:
        """Create what is missing: idempotent, and serialised by an advisory lock when many
        workers start at once. Tables that are complete are only read, so a worker starts
        on a read-only database, and takes no lock a running query would wait for."""
        undefined = (self._psycopg2.errors.UndefinedTable, self._psycopg2.errors.UndefinedColumn)

        def complete(cursor) -> bool:
            for table in self.tables:
                try:
                    cursor.execute(table.exists_sql)
                except undefined:
                    return False
            return True

        pool = self._pool.get()
        if self._run_on(pool, complete, writes=False, transaction=False):
            return True
        lock_key = zlib.crc32(",".join(t.name for t in self.tables).encode())

        def create(cursor) -> None:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            for table in self.tables:
                for statement in table.create_statements():
                    cursor.execute(statement)

        self._run_on(pool, create, writes=True, transaction=True)
        return True

    def run(
        self,
        work: Callable[[object], T],
        *,
        writes: bool = False,
        transaction: bool = False,
        probe: bool = False,
    ) -> T:
        self._tables_created.get()
        pool = self._probe_pool.get() if probe else self._pool.get()
        return self._run_on(pool, work, writes=writes, transaction=transaction)

    def _run_on(self, pool: ConnectionPool, work, *, writes: bool, transaction: bool):
        """The one place that borrows a connection, runs work, translates driver errors into
        the service's errors, and returns or discards the connection."""
        errors = self._psycopg2.errors
        for attempt in (1, 2):
            connection = pool.take()
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
            except DeadlineExceeded:
                pool.give_back(connection, discard=True)
                if committing:
                    raise WriteOutcomeUnknown(
                        "no answer to the commit before the deadline"
                    ) from None
                raise
            except errors.QueryCanceled as exc:
                self._end_transaction(pool, connection)
                raise QueryTimeout(_first_line(exc)) from None
            except errors.UniqueViolation as exc:
                self._end_transaction(pool, connection)
                raise Conflict(getattr(exc.diag, "constraint_name", None) or "unique") from None
            except (errors.DataError, errors.IntegrityError) as exc:
                self._end_transaction(pool, connection)
                raise InvalidValue(_first_line(exc)) from None
            except (errors.ReadOnlySqlTransaction, errors.DiskFull) as exc:
                self._end_transaction(pool, connection)
                raise DatabaseUnavailable(_first_line(exc)) from None
            except self._connection_errors as exc:
                # Closed, or ended by the server (an administrator, a shutdown: SQLSTATE 57P*)
                # or the network (08*) before psycopg2 noticed the socket close.
                code = getattr(exc, "pgcode", None) or ""
                broken = connection.closed != 0 or code.startswith(("57P", "08"))
                pool.give_back(connection, discard=True)
                if broken:
                    pool.discard_idle()
                if broken and committing:
                    raise WriteOutcomeUnknown(_first_line(exc)) from None
                # Work that had not reached its commit cannot have been applied: one retry
                # on a fresh connection is safe.
                if broken and attempt == 1:
                    continue
                raise DatabaseUnavailable(_first_line(exc)) from None
            except BaseException:
                self._end_transaction(pool, connection)
                raise
            pool.give_back(connection)
            return result
        raise AssertionError("unreachable")

    def _end_transaction(self, pool: ConnectionPool, connection) -> None:
        """Roll back a failed explicit transaction (a no-op outside one), then return the
        connection, or discard it if it cannot be rolled back."""
        try:
            if connection.get_transaction_status() != 0:  # not idle
                connection.cursor().execute("ROLLBACK")
        except Exception:
            pool.give_back(connection, discard=True)
            return
        pool.give_back(connection)

    def write_problem(self) -> str | None:
        def work(cursor) -> bool:
            cursor.execute(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
            )
            return bool(cursor.fetchone()[0])

        return "read-only database" if self.run(work, probe=True) else None

    def close(self) -> None:
        for pool in (self._pool.current(), self._probe_pool.current()):
            if pool is not None:
                pool.close()
        self._pool.forget()
        self._probe_pool.forget()
        self._tables_created.forget()


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
        self._threads = PerProcess(threading.local)  # each thread's connection and deadline
        self._prepared = PerProcess(self._prepare_file)

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
        """Once per process: WAL journal and the tables (retried while another process holds
        the lock, since switching the journal mode does not wait for the busy timeout)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        try:
            deadline_at = time.monotonic() + self._timeout_s
            while True:
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline_at:
                        raise
                    time.sleep(0.05)
            try:
                for table in self.tables:
                    if _table_complete(connection, table):
                        continue
                    for statement in table.create_statements():
                        _execute_unless_column_exists(connection, statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        finally:
            connection.close()
        return True

    def run(
        self,
        work: Callable[[object], T],
        *,
        writes: bool = False,
        transaction: bool = False,
        probe: bool = False,
    ) -> T:
        state = self._thread()
        connection = state.connection
        state.deadline = time.monotonic() + min(
            self._timeout_s, deadline.remaining(default=self._timeout_s)
        )
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


def _table_complete(connection: sqlite3.Connection, table: Table) -> bool:
    try:
        connection.execute(table.exists_sql)
    except sqlite3.OperationalError as exc:
        if "no such" in str(exc):  # no such table, no such column
            return False
        raise
    return True


def _execute_unless_column_exists(connection: sqlite3.Connection, statement: str) -> None:
    try:
        connection.execute(statement)
    except sqlite3.OperationalError as exc:
        if not (statement.startswith("ALTER TABLE") and "duplicate column" in str(exc)):
            raise


def _sqlite_rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.rollback()


def open_database(settings: Settings) -> Database:
    """PostgreSQL when a postgresql:// URL is set, else SQLite (sqlite:///path or DATA_DIR)."""
    url = settings.database_url
    timeout_ms = settings.statement_timeout_ms
    if url and url.startswith(("postgresql://", "postgres://")):
        sizes = (settings.pool_min_size, settings.pool_max_size)
        return PostgresDatabase(
            url, *sizes, timeout_ms, settings.request_timeout_ms, settings.system_name
        )
    sqlite_path = settings.sqlite_path
    if url and url.startswith("sqlite:///"):
        sqlite_path = Path(url[len("sqlite:///") :])
    return SqliteDatabase(sqlite_path, timeout_ms)
