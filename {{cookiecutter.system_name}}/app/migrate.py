"""python -m app.migrate [--sql]: bring the database to the schema revision the code needs.

Configured like the service (DATABASE_URL, DATA_DIR). The revisions are the files in
migrations/versions/ (0001_..., 0002_...), written by the generator when a blueprint change
touches the database, and applied by Alembic, each once: under a lock (a PostgreSQL advisory
lock, or a lock file beside the SQLite database), so instances and jobs that run this at the
same time wait for each other and find nothing left to do. All the revisions of one run are
applied in one transaction (transactional DDL, on SQLite too): nothing half-applied. --sql
prints the SQL of what is pending instead of applying it.

The service checks the revision when a process first uses the database (app.persistence): a
database behind the code is not ready (503, naming both revisions). With MIGRATE_ON_START
(the default) each worker runs this module in a child process when the database is behind
(upgrade_in_a_child_process), so that no worker loads Alembic. The generator loads this file
on its own (blueprint_schema/migrations.py), for the revision files' names: at import it
needs the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess  # nosec B404: runs this module in a child process
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
VERSION_TABLE = "alembic_version"
READ_REVISION_SQL = f"SELECT version_num FROM {VERSION_TABLE}"  # nosec B608 (a constant)


def revision_scripts(versions_dir: Path = VERSIONS_DIR) -> list[Path]:
    """The revision scripts, oldest first: NNNN_<steps>.py, with NNNN_<steps>.json beside
    each (the table definitions its steps read)."""
    return sorted(versions_dir.glob("[0-9][0-9][0-9][0-9]_*.py"))


def revision_of(script: Path) -> str:
    return script.name.split("_", 1)[0]


def expected_revision(versions_dir: Path = VERSIONS_DIR) -> str | None:
    """The newest revision the code ships (revisions are numbered: 0001, 0002, ...)."""
    scripts = revision_scripts(versions_dir)
    return revision_of(scripts[-1]) if scripts else None


EXPECTED_REVISION = expected_revision()  # of the code this process runs


def behind(found: str | None, expected: str | None) -> bool:
    """A database at an older revision than the code needs (a newer one is fine: the next
    release's additive migration may already be applied while this code still runs)."""
    if expected is None:
        return False
    return found is None or int(found) < int(expected)


def behind_message(found: str | None, expected: str | None) -> str:
    return (
        f"schema behind the code: the database is at revision {found or 'none'}, the code "
        f"needs {expected}; run python -m app.migrate"
    )


# A table or column the code uses is missing although the revision says otherwise (changed
# by hand, or restored from an older backup).
MISSING_IN_SCHEMA = (
    "schema behind the code: a table or column it uses is missing; run python -m app.migrate"
)


def sqlalchemy_url(database_url: str | None, sqlite_path: Path) -> str:
    """The service's database as a SQLAlchemy URL (psycopg2 for PostgreSQL, as the service)."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + database_url.split("://", 1)[1]
    if database_url and database_url.startswith("sqlite:///"):
        return database_url
    return f"sqlite:///{sqlite_path}"


def upgrade(
    url: str, *, sql: bool = False, out: TextIO = sys.stdout, transaction_pooler: bool = False
) -> list[str]:
    """Apply the pending revisions (or print their SQL); return those applied.

    transaction_pooler: PostgreSQL is reached through a pooler in transaction mode (PgBouncer),
    where a lock held by a session may be taken on one server connection and released on
    another: the lock is then one of the migration's transaction (pg_advisory_xact_lock)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config(stdout=out)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if sql:
        config.attributes["dialect"] = "postgresql" if url.startswith("postgresql") else "sqlite"
        config.output_buffer = out
        current = _current_revision(url, out)  # the SQL of what is pending, when it can ask
        command.upgrade(config, f"{current}:head" if current else "head", sql=True)
        return []
    engine = _engine(url)
    try:
        with _migration_lock(engine, transaction_pooler) as connection:
            config.attributes["connection"] = connection
            if transaction_pooler:
                config.attributes["transaction_lock"] = _lock_key(engine)
            command.upgrade(config, "head")
            connection.commit()
            after = MigrationContext.configure(connection).get_current_revision()
            connection.commit()
    finally:
        engine.dispose()
    return _between(config.attributes.get("revision_before"), after)


def _lock_key(engine) -> int:
    return zlib.crc32(f"{engine.url.database} schema migrations".encode())


def _current_revision(url: str, out: TextIO) -> str | None:
    """The database's revision, or None when it has none or cannot be reached (said on
    stderr, and in the printed SQL, since every revision is then printed)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import SQLAlchemyError

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as error:
        from .persistence.errors import first_line

        warning = f"the database could not be asked for its revision ({first_line(error)}): "
        warning += "every revision"
        print(f"warning: {warning} is printed", file=sys.stderr)
        print(f"-- {warning} follows, as for an empty database", file=out)
        return None
    finally:
        engine.dispose()


def _engine(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy import event
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        # Python's sqlite3 runs DDL outside transactions: SQLAlchemy's own recipe makes it
        # emit BEGIN itself, so that a migration's DDL commits or rolls back as one.
        @event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _between(before: str | None, after: str | None) -> list[str]:
    if after is None or before == after:
        return []
    first = 1 if before is None else int(before) + 1
    return [f"{number:04d}" for number in range(first, int(after) + 1)]


@contextlib.contextmanager
def _migration_lock(engine, transaction_pooler: bool = False) -> Iterator[object]:
    """A connection that alone may migrate this database until it is released (behind a
    transaction pooler, migrations/env.py takes the lock in the migration's transaction)."""
    from sqlalchemy import text

    if engine.dialect.name == "sqlite":
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql" and transaction_pooler:
            yield connection
        elif engine.dialect.name == "postgresql":
            key = _lock_key(engine)
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        else:
            import fcntl

            with open(f"{engine.url.database}.migrate-lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield connection
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)


REFUSED_EXIT_STATUS = 3  # a revision cannot be applied as it stands: trying again will not help


def upgrade_in_a_child_process(database_url: str) -> None:
    """`python -m app.migrate` on database_url, in a child process: what the service's own
    processes run (MIGRATE_ON_START), so that Alembic and SQLAlchemy (about 25 MB) are never
    loaded into a worker. Raises MigrationRefused, or RuntimeError with the child's error."""
    result = subprocess.run(  # nosec B603: this interpreter, this module, no shell
        [sys.executable, "-m", "app.migrate"],
        cwd=MIGRATIONS_DIR.parent,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return
    error = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
    if result.returncode == REFUSED_EXIT_STATUS:
        from .persistence.errors import MigrationRefused

        raise MigrationRefused(error.removeprefix("error: "))
    raise RuntimeError(error.removeprefix("error: "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.migrate", description=__doc__)
    parser.add_argument("--sql", action="store_true", help="print the SQL, apply nothing")
    args = parser.parse_args(argv)
    from .settings import ConfigError
    from .settings import load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    url = sqlalchemy_url(settings.database_url, settings.sqlite_path)
    if args.sql:
        upgrade(url, sql=True)
        return 0
    from sqlalchemy.exc import SQLAlchemyError

    from .persistence.errors import MigrationRefused
    from .persistence.errors import first_line

    try:
        applied = upgrade(url, transaction_pooler=settings.transaction_pooler)
    except MigrationRefused as refusal:
        print(f"error: {refusal}; nothing was applied", file=sys.stderr)
        return REFUSED_EXIT_STATUS
    except (SQLAlchemyError, OSError) as error:
        print(f"error: {first_line(error)}; nothing was applied", file=sys.stderr)
        return 1
    done = f"the database is at revision {EXPECTED_REVISION}"
    print(f"applied {', '.join(applied)}; {done}" if applied else f"nothing to apply; {done}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
