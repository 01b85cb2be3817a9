"""PostgreSQL: a small pool of connections per process, and a deadline on every wait.

Every wait on PostgreSQL ends at the request's deadline (app.deadline), whatever the database
or the network does:
- a statement runs in libpq's blocking mode (the GIL is released once per statement) while
  the process's Watchdog keeps its deadline: past it, the connection's socket is shut down,
  which ends libpq's wait at once with an error, and the connection is discarded;
- a new connection is made on a thread of its own, waited for until the deadline (libpq's
  connect_timeout ends the attempt itself);
- waiting for a free connection ends at the deadline.
The server's statement timeout still cancels slow statements first; TCP keepalives and
tcp_user_timeout let the kernel notice a peer that is gone while a connection sits idle.
"""

from __future__ import annotations

import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as WaitTimedOut
from typing import TypeVar

from .. import deadline
from ..migrate import MISSING_IN_SCHEMA
from ..migrate import READ_REVISION_SQL
from .database import Database
from .database import PerProcess
from .database import SchemaRevision
from .errors import Conflict
from .errors import DatabaseUnavailable
from .errors import DeadlineExceeded
from .errors import InvalidValue
from .errors import QueryTimeout
from .errors import SchemaBehind
from .errors import StorageError
from .errors import WriteOutcomeUnknown
from .errors import first_line
from .sql import Dialect

T = TypeVar("T")
# Idle pooled connections: the kernel probes the peer after 10 s of silence, every 5 s, and
# gives up after 3 unanswered probes.
TCP_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5}
TCP_KEEPALIVE_COUNT = 3
# Threads that may check readiness at once (the worker's probe threads).
PROBE_CONNECTIONS = 2
# How often the watchdog looks at the statements it watches: deadlines are kept to this.
WATCH_INTERVAL_S = 0.05


class Watch:
    """A statement being watched: its connection's socket and its deadline."""

    __slots__ = ("socket_fd", "expires", "fired")

    def __init__(self, socket_fd: int, expires: float) -> None:
        self.socket_fd = socket_fd
        self.expires = expires
        self.fired = False


class Watchdog:
    """Ends statements that outlive their deadline, one thread per process.

    Shutting a socket down (not closing it: libpq still owns the descriptor) wakes libpq's
    blocking wait with an error. The thread sleeps while nothing is watched.
    """

    def __init__(self) -> None:
        self._watched: set[Watch] = set()
        self._lock = threading.Lock()
        self._busy = threading.Event()
        threading.Thread(target=self._run, name="database-watchdog", daemon=True).start()

    def watch(self, connection, expires: float) -> Watch:
        watch = Watch(connection.fileno(), expires)
        with self._lock:
            self._watched.add(watch)
        if not self._busy.is_set():
            self._busy.set()
        return watch

    def release(self, watch: Watch) -> bool:
        """Stop watching; True when the deadline passed first (the socket is shut down)."""
        with self._lock:
            self._watched.discard(watch)
        return watch.fired

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            with self._lock:
                if not self._watched:
                    self._busy.clear()
                    continue
                for watch in [w for w in self._watched if w.expires <= now]:
                    self._watched.discard(watch)
                    watch.fired = True
                    _shut_down(watch.socket_fd)


def _shut_down(socket_fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(socket_fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer
    finally:
        sock.close()  # the duplicate only


class ConnectionPool:
    """Up to max_size connections of one process, min_size of them kept when idle.

    Connecting happens outside the lock, so a database that does not answer never makes one
    thread wait for another's connection attempt. A thread that finds every connection in
    use waits for one, until its deadline.
    """

    def __init__(
        self,
        connect: Callable[[], object],
        min_size: int,
        max_size: int,
        default_wait_s: float,
        watchdog: Watchdog,
    ) -> None:
        self._connect = connect
        self.watchdog = watchdog  # the process's: it keeps the deadline of borrowed connections
        self._min_size = min_size
        self._max_size = max_size
        self._default_wait_s = default_wait_s
        self._idle: list = []
        self._open = 0
        self._freed = threading.Condition()

    def take(self):
        if deadline.remaining(default=self._default_wait_s) <= 0:
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
                if not self._freed.wait(deadline.remaining(default=self._default_wait_s)):
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


def _close_unused(attempt: Future) -> None:
    """A connection that arrived after its caller gave up waiting."""
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().close()


class PostgresDatabase(Database):
    def __init__(
        self,
        url: str,
        min_size: int,
        max_size: int,
        statement_timeout_ms: int,
        request_timeout_ms: int,
        name: str,
        migrate_on_start: bool = True,
        transaction_pooler: bool = False,
    ) -> None:
        super().__init__()
        import psycopg2
        import psycopg2.errors

        self._psycopg2 = psycopg2
        self.dialect = Dialect("postgresql")
        self._wait_s = request_timeout_ms / 1000  # outside a request (start-up)
        self._connect_arguments = {
            "dsn": url,
            "application_name": name,
            # libpq counts whole seconds, at least 2.
            "connect_timeout": max(2, math.ceil(self._wait_s)),
            **TCP_KEEPALIVE,
            "keepalives_count": TCP_KEEPALIVE_COUNT,
            # Data sent but not acknowledged for this long: the connection is dead.
            "tcp_user_timeout": request_timeout_ms,
        }
        # Each connection's statement timeout. A pooler in transaction mode (PgBouncer) hands
        # a connection's statements to any of its server connections and refuses startup
        # options: there the timeout must be the database role's own (ALTER ROLE ... SET
        # statement_timeout), which each new connection checks instead.
        self._statement_timeout_ms = statement_timeout_ms
        self._transaction_pooler = transaction_pooler
        if not transaction_pooler:
            self._connect_arguments["options"] = f"-c statement_timeout={statement_timeout_ms}"
        self._pool = PerProcess(
            lambda: ConnectionPool(
                self._connect, min_size, max_size, self._wait_s, self._watchdog.get()
            )
        )
        self._probe_pool = PerProcess(
            lambda: ConnectionPool(
                self._connect, 1, PROBE_CONNECTIONS, self._wait_s, self._watchdog.get()
            )
        )
        self._watchdog = PerProcess(Watchdog)
        self.schema = SchemaRevision(url, migrate_on_start, self._read_revision)
        errors = psycopg2.errors
        # Driver errors -> the service's, for work that reached the database and failed there.
        self._refusals: tuple[tuple[tuple[type, ...], Callable[[Exception], StorageError]], ...]
        self._refusals = (
            ((errors.QueryCanceled,), lambda exc: QueryTimeout(first_line(exc))),
            (
                (errors.UniqueViolation,),
                lambda exc: Conflict(getattr(exc.diag, "constraint_name", None) or "unique"),
            ),
            ((errors.DataError, errors.IntegrityError), lambda e: InvalidValue(first_line(e))),
            (
                (errors.ReadOnlySqlTransaction, errors.DiskFull),
                lambda exc: DatabaseUnavailable(first_line(exc)),
            ),
            (
                # A database behind the code (a blueprint change not yet migrated): 503,
                # as /ready says, never a 500 per request.
                (errors.UndefinedTable, errors.UndefinedColumn),
                lambda exc: SchemaBehind(MISSING_IN_SCHEMA),
            ),
        )
        self._connection_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    def _connect(self):
        """A new connection, made on a thread of its own and waited for until the deadline.

        A plain thread per attempt, not an executor: while a worker exits, requests still in
        flight may need a connection, and an executor refuses work once Python has begun
        shutting down (connecting is rare: the pool keeps its connections).
        """
        attempt: Future = Future()

        def connect() -> None:
            try:
                attempt.set_result(self._open_connection())
            except BaseException as exc:  # handed to the waiting request
                attempt.set_exception(exc)

        threading.Thread(target=connect, name="database-connect", daemon=True).start()
        try:
            return attempt.result(timeout=deadline.remaining(default=self._wait_s))
        except WaitTimedOut:
            attempt.add_done_callback(_close_unused)
            raise DeadlineExceeded("no connection to the database before the deadline") from None

    def _open_connection(self):
        try:
            connection = self._psycopg2.connect(**self._connect_arguments)
        except self._psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(first_line(exc)) from None
        connection.autocommit = True
        if self._transaction_pooler:
            self._check_role_timeout(connection)
        return connection

    def _check_role_timeout(self, connection) -> None:
        """Behind a transaction pooler, the statement timeout comes from the role: refuse a
        connection whose server would let a statement run longer than configured."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'"
            )
            (found,) = cursor.fetchone()
        if found != self._statement_timeout_ms:
            connection.close()
            raise DatabaseUnavailable(
                f"statement_timeout is {found} ms for this role, DB_STATEMENT_TIMEOUT_MS "
                f"{self._statement_timeout_ms}: behind a transaction pooler, run ALTER ROLE "
                f"<role> SET statement_timeout = {self._statement_timeout_ms}"
            )

    def _read_revision(self, pool: ConnectionPool | None = None) -> str | None:
        """The database's schema revision; None before its first migration."""
        undefined = self._psycopg2.errors.UndefinedTable

        def read(cursor) -> str | None:
            try:
                cursor.execute(READ_REVISION_SQL)
            except undefined:
                return None
            row = cursor.fetchone()
            return row[0] if row else None

        return self._run_on(pool or self._pool.get(), read, writes=False, transaction=False)

    def run(
        self,
        work: Callable[[object], T],
        *,
        writes: bool = False,
        transaction: bool = False,
        probe: bool = False,
    ) -> T:
        pool = self._probe_pool.get() if probe else self._pool.get()
        self.schema.require_current(pool)
        return self._run_on(pool, work, writes=writes, transaction=transaction)

    def _run_on(self, pool: ConnectionPool, work, *, writes: bool, transaction: bool):
        """The one place that borrows a connection, runs work under the watchdog, translates
        driver errors into the service's errors, and returns or discards the connection."""
        watchdog = pool.watchdog
        for attempt in (1, 2):
            connection = pool.take()
            expires = deadline.expires() or time.monotonic() + self._wait_s
            watch = watchdog.watch(connection, expires)
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
            except BaseException as exc:
                out_of_time = watchdog.release(watch)
                retry = self._failed(pool, connection, exc, out_of_time, committing, attempt)
                if retry:
                    continue
                raise
            pool.give_back(connection, discard=watchdog.release(watch))
            return result
        raise AssertionError("unreachable")

    def _failed(
        self,
        pool: ConnectionPool,
        connection,
        exc: BaseException,
        out_of_time: bool,
        committing: bool,
        attempt: int,
    ) -> bool:
        """After work failed: return or discard the connection, then raise the service's
        error, or return True when one more attempt on a fresh connection is safe."""
        if out_of_time:
            pool.give_back(connection, discard=True)
            if committing:
                raise WriteOutcomeUnknown("no answer to the commit before the deadline") from None
            raise DeadlineExceeded("the database did not answer before the deadline") from None
        for kinds, translate in self._refusals:
            if isinstance(exc, kinds):
                self._end_transaction(pool, connection)
                raise translate(exc) from None
        if not isinstance(exc, self._connection_errors):
            self._end_transaction(pool, connection)
            return False  # not the database's: raised as it is
        # Closed, or ended by the server (an administrator, a shutdown: SQLSTATE 57P*) or the
        # network (08*) before psycopg2 noticed the socket close.
        code = getattr(exc, "pgcode", None) or ""
        broken = connection.closed != 0 or code.startswith(("57P", "08"))
        pool.give_back(connection, discard=True)
        if broken:
            pool.discard_idle()
        if broken and committing:
            raise WriteOutcomeUnknown(first_line(exc)) from None
        # Work that had not reached its commit cannot have been applied: one retry on a fresh
        # connection is safe.
        if broken and attempt == 1:
            return True
        raise DatabaseUnavailable(first_line(exc)) from None

    def _end_transaction(self, pool: ConnectionPool, connection) -> None:
        """Roll back a failed explicit transaction (a no-op outside one), then return the
        connection, or discard it if it cannot be rolled back in time."""
        if connection.get_transaction_status() == 0:  # idle: nothing to roll back
            pool.give_back(connection)
            return
        watchdog = pool.watchdog
        try:
            watch = watchdog.watch(connection, deadline.expires() or time.monotonic() + 1)
        except Exception:  # closed
            pool.give_back(connection, discard=True)
            return
        try:
            connection.cursor().execute("ROLLBACK")
        except Exception:
            watchdog.release(watch)
            pool.give_back(connection, discard=True)
            return
        pool.give_back(connection, discard=watchdog.release(watch))

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
        self.schema.forget()
