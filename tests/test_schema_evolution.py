"""A service that lives through five versions of its blueprint, on real PostgreSQL and SQLite
behind real Gunicorn, with a writer and a reader running against it throughout: every change
issue 12 names (add, rename, widen, add and remove constraints, index, drop), every row and
value compared exactly, and the migrated database's catalog compared with the one a new
project's migration makes."""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_migrations import NOT_MIGRATING, migrate, rows, wait_ready
from test_regeneration import add_customers, changed_blueprint, cookiecutter, regenerate

from service_validator.server import GunicornServer, http

pytestmark = pytest.mark.slow

# -- the five versions ----------------------------------------------------------------------


def _fields(blueprint: dict) -> dict:
    return blueprint["components"][0]["config"]["fields"]


def version_2(blueprint: dict) -> None:
    """Additive: a field with a default, a required field with a default, an index on a
    field of a table that holds rows, a new store; a removed field (its column kept)."""
    fields = _fields(blueprint)
    fields["notes"] = {"type": "string", "default": "none yet"}
    fields["priority"] = {"type": "integer", "required": True, "default": 3}
    fields["customer"]["index"] = True
    del fields["paid_at"]
    add_customers(blueprint, ["get", "create"])


def version_3(blueprint: dict) -> None:
    """Renames: the store orders (table orders) becomes purchases, customer becomes buyer."""
    store = blueprint["components"][0]
    store["name"] = "purchases"
    store["config"]["renamed_from"] = "orders"
    store["config"]["table"] = "purchases"
    store["config"]["fields"] = {
        ("buyer" if name == "customer" else name): (
            {**spec, "renamed_from": "customer"} if name == "customer" else spec
        )
        for name, spec in store["config"]["fields"].items()
    }
    blueprint["components"][1]["config"]["store"] = "purchases"
    blueprint["bindings"] = [{"from": "orders_api", "to": "purchases"}]


def version_4(blueprint: dict) -> None:
    """Widening and constraints: integer to number, string to text, a longer max_length, a
    new maximum, an enum with one more value, unique and required removed; a store removed
    (its table kept)."""
    fields = _fields(blueprint)
    fields["priority"] = {"type": "number", "default": 3}
    fields["notes"]["type"] = "text"
    fields["buyer"]["max_length"] = 200
    fields["total"]["maximum"] = 1_000_000
    fields["status"]["enum"] = ["new", "paid", "shipped", "cancelled"]
    del fields["email"]["unique"]
    blueprint["components"] = [
        c for c in blueprint["components"] if c["name"] not in ("customers", "customers_api")
    ]


def version_5(blueprint: dict) -> None:
    """Drops, by explicit statements: the removed field's column and the removed store's
    table. Unique and required added back, which no existing row breaks."""
    fields = _fields(blueprint)
    blueprint["components"][0]["config"]["drop_columns"] = ["paid_at"]
    blueprint["drop_tables"] = ["customers"]
    fields["email"]["unique"] = True
    fields["status"]["required"] = True


VERSIONS = [version_2, version_3, version_4, version_5]
# Lines of each regeneration's plan: the changes as a reviewer reads them before anything is
# written, and the migration's steps.
PLANNED = {
    2: [
        "  add    field orders.priority: integer",
        "  Migration 0002 (python -m app.migrate applies it):",
        '    add column orders.notes (existing rows get "none yet")',
        "    keep column orders.paid_at: no longer served, its values stay",
        "  Migration 0003 (python -m app.migrate applies it):",
        "    create index on orders.customer (on PostgreSQL CONCURRENTLY: reads and writes go on)",
    ],
    3: [
        "  rename store orders -> purchases: table orders -> purchases, every row kept",
        "  rename field purchases.customer -> buyer: every value kept; clients read and send it "
        "by its new name  [breaks clients]",
        "    rename table orders to purchases, every row kept",
        "    rename column purchases.customer to buyer, every value kept",
    ],
    4: [
        '    change column purchases.priority: type "integer" -> "number"; required true -> (none)',
        "    change column purchases.total: maximum (none) -> 1000000",
        "    keep table customers: no longer served, its rows stay",
    ],
    5: [
        "  drop   column purchases.paid_at: deleted with every value in it (drop_columns)  "
        "[deletes data]",
        "  drop   table customers: deleted with every row in it (drop_tables)  [deletes data]",
        "    DROP column purchases.paid_at and every value in it (drop_columns)",
        "    DROP table customers and every row in it (drop_tables)",
    ],
}


def payload(version: int, number: int) -> dict:
    """The n-th write of the writer, as the API of `version` takes it."""
    body = {"total": number + 0.25, "email": f"writer{number}@example.org", "status": "paid"}
    body["customer" if version < 3 else "buyer"] = f"writer {number} ✓"
    if version >= 2:
        body["notes"] = f"note {number}"
        body["priority"] = number % 7 if version < 4 else number % 7 + 0.5
    return body


# -- the traffic ----------------------------------------------------------------------------


@dataclass
class Traffic:
    """A writer (POST with an Idempotency-Key, retried on 503 and on a refused connection
    until it is answered) and a reader (GET of records written), against whichever server
    runs now."""

    url: str | None = None
    version: int = 1
    acknowledged: dict[int, dict] = field(default_factory=dict)  # id: body (as written)
    statuses: dict[int, int] = field(default_factory=dict)
    unavailable: int = 0  # writes and reads answered 503 (database behind) or refused
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def write(self) -> None:
        number = 0
        while not self._stop.is_set() and number < 100_000:
            number += 1
            key = {"Idempotency-Key": f"writer-{number}"}
            body, version = None, None
            for _ in range(2000):  # 503s while the database is behind: bounded
                if self._stop.is_set():
                    return
                url, now = self.url, self.version
                if url is None:
                    time.sleep(0.02)
                    continue
                if body is None or version != now:
                    # a write refused (not applied) before a restart is sent as the new API takes it
                    body, version = payload(now, number), now
                    key = {"Idempotency-Key": f"writer-{number}-v{now}"}
                try:
                    answer = http("POST", f"{url}/orders", body, headers=key, timeout=10)
                except OSError:
                    self.unavailable += 1
                    time.sleep(0.02)
                    continue
                self._count(answer.status)
                if answer.status == 503:
                    self.unavailable += 1
                    time.sleep(0.02)
                    continue
                if answer.status != 201:
                    self.errors.append(f"POST {body}: {answer.status} {answer.body[:300]!r}")
                    return
                self.acknowledged[answer.json()["id"]] = body
                break
            time.sleep(0.005)

    def read(self) -> None:
        generator = random.Random(7)
        for _ in range(200_000):
            if self._stop.is_set():
                return
            url, ids = self.url, list(self.acknowledged)
            if url is None or not ids:
                time.sleep(0.02)
                continue
            try:
                answer = http("GET", f"{url}/orders/{generator.choice(ids)}", timeout=10)
            except OSError:
                self.unavailable += 1
                continue
            self._count(answer.status)
            if answer.status == 503:
                self.unavailable += 1
            elif answer.status != 200:
                self.errors.append(f"GET: {answer.status} {answer.body[:300]!r}")
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self.write), threading.Thread(target=self.read)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def settle(self, writes: int, limit_s: float = 30) -> None:
        """Let the writer acknowledge `writes` more records (bounded)."""
        target = len(self.acknowledged) + writes
        deadline = time.monotonic() + limit_s
        while len(self.acknowledged) < target and time.monotonic() < deadline:
            assert not self.errors, self.errors
            time.sleep(0.05)
        assert len(self.acknowledged) >= target, (len(self.acknowledged), self.statuses)


# -- what each version does to a stored row --------------------------------------------------


def carried(version: int, row: dict) -> dict:
    """A row of the table before the migration to `version`, as that migration leaves it."""
    row = dict(row)
    if version == 2:
        row["notes"] = "none yet" if "notes" not in row else row["notes"]
        row["priority"] = 3 if "priority" not in row else row["priority"]
    if version == 3:
        row["buyer"] = row.pop("customer")
    if version == 4:
        row["priority"] = float(row["priority"])
    if version == 5:
        del row["paid_at"]
    return row


def table_of(version: int) -> str:
    return "orders" if version < 3 else "purchases"


def same_values(expected: dict, found: dict) -> bool:
    """Equal, and of the same types (a widened integer reads back as a float)."""
    return expected == found and all(
        type(expected[key]) is type(found[key]) for key in expected if expected[key] is not None
    )


def as_written(version: int, body: dict, row: dict) -> dict:
    """The fields of a stored row that a write of `body` set."""
    return {key: row[key] for key in body}


# -- the catalog -----------------------------------------------------------------------------


def catalog(env: dict, data_dir: Path) -> dict:
    """The database's tables as its catalog describes them: columns (type, NOT NULL,
    default), CHECK constraints and indexes, by name (column order aside)."""
    if env.get("DATABASE_URL"):
        import psycopg2

        queries = {
            "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, "
            "numeric_precision, is_identity FROM information_schema.columns "
            "WHERE table_schema = 'public'",
            "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
            "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public'",
            "sequences": "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'",
        }
        with psycopg2.connect(env["DATABASE_URL"]) as connection:
            with connection.cursor() as cursor:
                found = {}
                for name, query in queries.items():
                    cursor.execute(query)
                    found[name] = sorted(cursor.fetchall(), key=repr)
        connection.close()
        return found
    connection = sqlite3.connect(data_dir / "order_service.sqlite3")
    try:
        found = {"columns": [], "constraints": [], "indexes": []}
        tables = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        for table, sql in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")'):
                found["columns"].append((table, *column[1:]))
            for constraint in re.findall(
                r'CONSTRAINT ("[^"]+" CHECK \(.*?\))(?=, CONSTRAINT|\)$)', sql
            ):
                found["constraints"].append((table, constraint))
        indexes = connection.execute(
            "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()
        found["indexes"] = [
            (table, name, sql.replace("IF NOT EXISTS ", "")) for table, name, sql in indexes if sql
        ]
        found["columns"].sort(key=repr)
        found["constraints"].sort(key=repr)
        return found
    finally:
        connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> dict:
    if request.param == "postgresql":
        return {"DATABASE_URL": request.getfixturevalue("postgres_database")}
    return {}


def test_five_blueprint_versions_keep_every_row_while_the_service_runs(
    shop, tmp_path, backend, request, measure
):
    project, blueprint = shop
    run = tmp_path / "run"
    data = run / "data"
    env = {**backend, "DATA_DIR": str(data)}
    manual = {**backend, "MIGRATE_ON_START": "false"}
    figures: dict[str, object] = {"backend": "postgresql" if backend else "sqlite"}

    servers: list[GunicornServer] = []

    def deploy() -> GunicornServer:
        """The current code, started as its README says (migrations run by hand)."""
        servers.append(GunicornServer(project, run, manual, because=NOT_MIGRATING).start())
        return servers[-1]

    try:
        with Traffic() as traffic:
            # Version 1, migrated by hand like every later one.
            server = deploy()
            assert migrate(project, env).returncode == 0
            assert wait_ready(server.url) == 200
            traffic.url = server.url
            traffic.settle(20)
            current = blueprint
            for version, change in enumerate(VERSIONS, start=2):
                # New code, deployed: regenerate, then restart with it.
                current = changed_blueprint(current, tmp_path / f"v{version}.yaml", change)
                server.stop()
                traffic.url = None
                result = regenerate(tmp_path, current)
                assert result.returncode == 0, result.stderr
                plan = result.stdout.splitlines()
                for line in PLANNED[version]:
                    assert line in plan, (line, plan)
                before = {row["id"]: row for row in rows(env, data, table_of(version - 1))}
                server = deploy()
                traffic.version, traffic.url = version, server.url
                # The database is behind the new code: not ready, and every request 503, never 500.
                ready = http("GET", f"{server.url}/ready")
                assert ready.status == 503, ready.body
                assert "python -m app.migrate" in ready.body.decode()
                unavailable = traffic.unavailable
                time.sleep(0.5)  # the writer and the reader meet the database behind the code
                applied = migrate(project, env)
                assert applied.returncode == 0, applied.stderr
                assert wait_ready(server.url) == 200
                figures[f"v{version} requests answered 503 while behind"] = (
                    traffic.unavailable - unavailable
                )
                figures[f"v{version} migration"] = applied.stdout.strip()
                traffic.settle(20)
                after = {row["id"]: row for row in rows(env, data, table_of(version))}
                for row_id, row in before.items():
                    expected = carried(version, row)
                    assert same_values(expected, after[row_id]), (version, expected, after[row_id])
                figures[f"v{version} rows kept"] = len(before)
            server.stop()
    finally:
        for server in servers:
            server.stop()
    assert not traffic.errors, traffic.errors
    assert not [status for status in traffic.statuses if status >= 500 and status != 503], (
        traffic.statuses
    )
    final = {row["id"]: row for row in rows(env, data, "purchases")}
    for row_id, body in traffic.acknowledged.items():
        stored = final[row_id]
        for key, value in body.items():
            name = "buyer" if key == "customer" else key
            assert stored[name] == value, (row_id, key, value, stored[name])
    figures["writes acknowledged"] = len(traffic.acknowledged)
    figures["rows at the end"] = len(final)
    figures["responses"] = dict(sorted(traffic.statuses.items()))

    # Migrating twice changes nothing.
    migrated = catalog(env, data)
    again = migrate(project, env)
    assert again.stdout.strip().startswith("nothing to apply"), again.stdout
    assert catalog(env, data) == migrated
    # The dropped table and column are gone; every other table is what a new project makes.
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    made = cookiecutter(fresh_dir, current)
    assert made.returncode == 0, made.stderr
    fresh_env = dict(env)
    if backend:
        fresh_env["DATABASE_URL"] = request.getfixturevalue("postgres_databases")()
    fresh_data = tmp_path / "fresh-data"
    fresh_env["DATA_DIR"] = str(fresh_data)
    assert migrate(fresh_dir / "order_service", fresh_env).returncode == 0
    expected = catalog(fresh_env, fresh_data)
    for part, found in migrated.items():
        assert found == expected[part], (part, set(found) ^ set(expected[part]))
    print(figures)  # for the closing note (pytest -s)
    behind = [figures[f"v{n} requests answered 503 while behind"] for n in range(2, 6)]
    measure(
        load="a writer (POST with Idempotency-Key, retried on 503) and a reader through "
        f"five blueprint versions ({figures['backend']})",
        fault="regenerate, restart on the new code (MIGRATE_ON_START=false), python -m "
        "app.migrate: add, rename, widen, constrain, index, drop",
        result=f"every row kept, value by value ({figures['v5 rows kept']} rows before the "
        f"last version); /ready 503 while behind, requests 503 then ({behind}), never 500; "
        "the catalog equal to a new project's",
        sent=sum(traffic.statuses.values()),
        errors=sum(n for status, n in traffic.statuses.items() if status >= 500 and status != 503),
        acknowledged=len(traffic.acknowledged),
        found=sum(1 for row_id in traffic.acknowledged if row_id in final),
    )


def test_the_printed_sql_is_what_the_migration_applies_on_sqlite(shop, tmp_path):
    """`python -m app.migrate --sql` on SQLite, whose rebuilt tables depend on what earlier
    steps did: the printed SQL, run by sqlite3 on one copy of a database holding rows, leaves
    the same tables and rows as the migration itself on another copy."""
    import shutil

    project, blueprint = shop
    data = tmp_path / "data"
    with GunicornServer(project, tmp_path / "run", {"DATA_DIR": str(data)}) as server:
        assert wait_ready(server.url) == 200
        for number in range(3):
            body = payload(1, number)
            assert http("POST", f"{server.url}/orders", body).status == 201
    current = blueprint
    for version, change in enumerate(VERSIONS[:2], start=2):  # additions, then renames
        current = changed_blueprint(current, tmp_path / f"v{version}.yaml", change)
        assert regenerate(tmp_path, current).returncode == 0
    printed = migrate(project, {"DATA_DIR": str(data)}, "--sql")
    assert printed.returncode == 0, printed.stderr
    copies = {name: tmp_path / name for name in ("printed", "applied")}
    for copy in copies.values():
        copy.mkdir()
        shutil.copy(data / "order_service.sqlite3", copy / "order_service.sqlite3")
    connection = sqlite3.connect(copies["printed"] / "order_service.sqlite3", isolation_level=None)
    connection.executescript(printed.stdout)
    connection.close()
    applied = migrate(project, {"DATA_DIR": str(copies["applied"])})
    assert applied.returncode == 0, applied.stderr
    made = {name: catalog({}, copy) for name, copy in copies.items()}
    for part, found in made["applied"].items():
        assert made["printed"][part] == found, set(made["printed"][part]) ^ set(found)
    assert rows({}, copies["printed"], "purchases") == rows({}, copies["applied"], "purchases")
    assert len(rows({}, copies["applied"], "purchases")) == 3
