"""Databases: the interface the stores use, and the choice between PostgreSQL and SQLite.

Connections are created lazily in the process that uses them (PerProcess), so nothing opened
in a Gunicorn master (also with preload_app) is ever shared with a forked worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Generic
from typing import TypeVar

from .. import deadline
from ..settings import Settings
from .errors import DeadlineExceeded
from .errors import MigrationRefused
from .errors import SchemaBehind
from .errors import first_line
from .sql import Dialect
from .sql import Table

T = TypeVar("T")
log = logging.getLogger(__name__)


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


class SchemaRevision:
    """Whether the database is at the schema revision the code needs (app.migrate).

    Requests and probes only ask (one query, until the answer is yes): a database behind the
    code answers every request, and /ready, with 503 naming both revisions, never a 500 for
    a missing column, and an instance becomes ready as soon as someone migrates. With
    MIGRATE_ON_START, start() has a thread of the process (Gunicorn's post_worker_init calls
    it; first use does, in a process that did not) run `python -m app.migrate` when the
    database is behind, again while it cannot be reached; the migration lock lets one process
    apply and the others find it done, and no request or probe ever waits for a migration.
    """

    RETRY_S = 5.0  # between attempts to apply while the database cannot be reached

    def __init__(self, url: str, apply_pending: bool, read: Callable[..., str | None]) -> None:
        self._url = url  # the service's DATABASE_URL, or sqlite:///path
        self._apply_pending = apply_pending
        self._read = read  # the database's revision (None before its first migration)
        self._current_in = 0  # the pid of the process that found it current
        self._started_in = 0  # the pid of the process whose thread applies pending revisions
        self._starting = threading.Lock()
        self._state = ""  # what the applying thread is doing, said in the 503

    def start(self) -> None:
        if not self._apply_pending:
            return
        with self._starting:
            if self._started_in == os.getpid():
                return
            self._started_in = os.getpid()
            self._state = "being applied"
        thread = threading.Thread(target=self._apply, name="schema-migrations", daemon=True)
        thread.start()

    def require_current(self, *read_arguments: object) -> None:
        """Raise SchemaBehind unless the database is current; read_arguments go to read()
        (the caller's connections: a probe never waits behind requests)."""
        if self._current_in == os.getpid():
            return
        self.start()
        from .. import migrate

        found = self._read(*read_arguments)
        if migrate.behind(found, migrate.EXPECTED_REVISION):
            reason = migrate.behind_message(found, migrate.EXPECTED_REVISION)
            if self._apply_pending:
                reason += f" (MIGRATE_ON_START: {self._state})"
            raise SchemaBehind(reason)
        self._current_in = os.getpid()

    def forget(self) -> None:
        self._current_in = 0

    def _apply(self) -> None:
        from .. import migrate

        while True:
            try:
                if not migrate.behind(self._read(), migrate.EXPECTED_REVISION):
                    self._state = "applied"
                    return
                migrate.upgrade_in_a_child_process(self._url)
            except MigrationRefused as refusal:
                self._state = f"refused: {refusal}"
                log.error("schema migrations refused: %s", refusal)
                return
            except Exception as exc:  # the database cannot be reached yet: try again
                self._state = f"failed, retried every {self.RETRY_S:g} s: {first_line(exc)}"
                log.warning("applying schema migrations failed: %s", first_line(exc))
                time.sleep(self.RETRY_S)
                continue
            self._state = "applied"
            log.info("schema migrations applied: the database is at %s", migrate.EXPECTED_REVISION)
            return


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
            url,
            *sizes,
            timeout_ms,
            settings.request_timeout_ms,
            settings.system_name,
            migrate_on_start=settings.migrate_on_start,
            transaction_pooler=settings.transaction_pooler,
        )
    sqlite_path = settings.sqlite_path
    if url and url.startswith("sqlite:///"):
        sqlite_path = Path(url[len("sqlite:///") :])
    from .sqlite import SqliteDatabase

    return SqliteDatabase(sqlite_path, timeout_ms, migrate_on_start=settings.migrate_on_start)
