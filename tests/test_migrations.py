"""Schema migrations computed from blueprint changes, applied by `python -m app.migrate`, on
real PostgreSQL and SQLite behind real Gunicorn: every stored value kept, compared exactly."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_python
from test_regeneration import (
    add_customers,
    changed_blueprint,
    regenerate,
    snapshot,
)

from blueprint_schema.yaml_source import read_file
from service_validator.server import GunicornServer, http, shell_environment

PYTHON = sys.executable
ORDERS = [
    {
        "customer": "Ada",
        "total": 12.5,
        "status": "paid",
        "email": "ada@example.org",
        "paid_at": "2024-03-01T10:00:00+00:00",
    },
    {"customer": "Grace", "total": 0.0, "email": "grace@example.org"},
    {"customer": "Émile ✓", "total": 99999.75, "status": "shipped", "email": "e@example.org"},
]
NOT_MIGRATING = "MIGRATE_ON_START=false: to see the service while its database is behind"


def grow(blueprint: dict) -> None:
    """Version 2: a field with a default, a plain field, a removed field, a new store."""
    fields = blueprint["components"][0]["config"]["fields"]
    fields["notes"] = {"type": "string", "default": "none yet"}
    fields["priority"] = {"type": "integer"}
    del fields["paid_at"]
    add_customers(blueprint, ["get", "create"])


def migrate(project: Path, env: dict, *arguments: str) -> subprocess.CompletedProcess:
    """`python -m app.migrate`, as the README runs it, in the project directory."""
    return run_python(project, env, "-m", "app.migrate", *arguments)


def rows(env: dict, data_dir: Path, table: str) -> list[dict]:
    """Every row of a table as the database holds it, id order (read around the service)."""
    if env.get("DATABASE_URL"):
        import psycopg2

        with psycopg2.connect(env["DATABASE_URL"]) as connection, connection.cursor() as cursor:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY id')  # a test's own table name
            names = [column.name for column in cursor.description]
            found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        connection.close()
        return found
    connection = sqlite3.connect(data_dir / "order_service.sqlite3")
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute(f'SELECT * FROM "{table}" ORDER BY id')]
    finally:
        connection.close()


def wait_ready(url: str, limit_s: float = 10) -> int:
    deadline = time.monotonic() + limit_s
    status = 0
    while time.monotonic() < deadline:
        status = http("GET", f"{url}/ready").status
        if status == 200:
            return status
        time.sleep(0.2)
    return status


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> dict:
    """A deployment's database choice: SQLite in the data directory, or a fresh PostgreSQL."""
    if request.param == "postgresql":
        return {"DATABASE_URL": request.getfixturevalue("postgres_database")}
    return {}


def test_a_blueprint_change_migrates_the_database_and_keeps_every_value(shop, tmp_path, backend):
    project, blueprint = shop
    data = tmp_path / "run" / "data"
    env = {**backend, "DATA_DIR": str(data)}
    # Version 1, migrated at start-up by the default setting.
    with GunicornServer(project, tmp_path / "run", backend) as server:
        assert wait_ready(server.url) == 200
        stored = []
        for order in ORDERS:
            created = http("POST", f"{server.url}/orders", order)
            assert created.status == 201, created.body
            stored.append(created.json())
    before = rows(env, data, "orders")
    assert len(before) == len(ORDERS)

    grown = changed_blueprint(blueprint, tmp_path / "shop2.yaml", grow)
    result = regenerate(tmp_path, grown)
    assert result.returncode == 0, result.stderr
    plan = result.stdout.splitlines()
    assert "  Migration 0002 (python -m app.migrate applies it):" in plan
    for line in (
        "    create table customers (or adopt it, keeping its rows)",
        '    add column orders.notes (existing rows get "none yet")',
        "    add column orders.priority",
        "    keep column orders.paid_at: no longer served, its values stay",
    ):
        assert line in plan, (line, plan)
    printed = migrate(project, env, "--sql")
    assert printed.returncode == 0, printed.stderr
    assert '"notes"' in printed.stdout and "Running upgrade 0001 -> 0002" in printed.stdout
    assert "-> 0001" not in printed.stdout  # only what is pending
    assert rows(env, data, "orders") == before  # --sql applied nothing

    # New code, database behind: not ready, and 503 (never 500) until someone migrates.
    with GunicornServer(
        project, tmp_path / "run", {**backend, "MIGRATE_ON_START": "false"}, because=NOT_MIGRATING
    ) as server:
        ready = http("GET", f"{server.url}/ready")
        assert ready.status == 503
        reason = ready.json()["checks"]["orders"]
        assert "database is at revision 0001, the code needs 0002" in reason, reason
        answer = http("GET", f"{server.url}/orders/{stored[0]['id']}")
        assert answer.status == 503 and "python -m app.migrate" in answer.json()["detail"]

        applied = migrate(project, env)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == "applied 0002; the database is at revision 0002"
        assert wait_ready(server.url) == 200  # without a restart
        for record in stored:
            served = http("GET", f"{server.url}/orders/{record['id']}").json()
            expected = {key: value for key, value in record.items() if key != "paid_at"}
            assert served == {**expected, "notes": "none yet", "priority": None}
        new = {**ORDERS[0], "email": "new@example.org", "notes": "ring twice", "priority": 2}
        del new["paid_at"]
        created = http("POST", f"{server.url}/orders", new)
        assert created.status == 201, created.body
        assert http("POST", f"{server.url}/customers", {"name": "Ada"}).status == 201

    after = rows(env, data, "orders")
    for old, now in zip(before, after, strict=False):
        assert {**old, "notes": "none yet", "priority": None} == now  # paid_at kept, too
    again = migrate(project, env)
    assert again.stdout.strip() == "nothing to apply; the database is at revision 0002"
    assert rows(env, data, "orders") == after


def test_two_migrations_at_once_apply_each_revision_once(shop, tmp_path, postgres_database):
    project, _ = shop
    env = {"DATABASE_URL": postgres_database}
    runs = [
        subprocess.Popen(
            [PYTHON, "-m", "app.migrate"],
            cwd=project,
            env={**shell_environment(), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    said = sorted(out.strip() for out, _ in outputs)
    assert said == [
        "applied 0001; the database is at revision 0001",
        "nothing to apply; the database is at revision 0001",
        "nothing to apply; the database is at revision 0001",
    ]


def test_a_type_change_is_refused_at_generation_with_its_location(shop, tmp_path):
    project, blueprint = shop
    before = snapshot(project)

    def retype(document: dict) -> None:
        document["components"][0]["config"]["fields"]["total"]["type"] = "string"
        del document["components"][0]["config"]["fields"]["total"]["minimum"]

    changed = changed_blueprint(blueprint, tmp_path / "shop2.yaml", retype)
    result = regenerate(tmp_path, changed)
    assert result.returncode != 0
    _, positions = read_file(changed)
    line, column = positions.locate(("components", 0, "config", "fields", "total", "type"))
    assert f"{changed}:{line}:{column}: field orders.total" in result.stderr, result.stderr
    assert "field orders.total changes type from number to string" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(project) == before


def test_a_project_from_before_migrations_is_adopted_without_losing_a_row(shop, tmp_path):
    """A project generated before migrations: no generation.json, no migrations/, a table the
    service created itself (without the idempotency columns of later versions)."""
    project, blueprint = shop
    (project / "generation.json").unlink()
    shutil.rmtree(project / "migrations" / "versions")
    data = tmp_path / "data"
    data.mkdir()
    connection = sqlite3.connect(data / "order_service.sqlite3")
    connection.execute(
        'CREATE TABLE "orders" ("id" INTEGER PRIMARY KEY AUTOINCREMENT, "customer" TEXT, '
        '"total" REAL, "status" TEXT, "email" TEXT UNIQUE, "paid_at" TEXT, '
        '"created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL)'
    )
    connection.execute(
        "INSERT INTO orders (customer, total, status, email, paid_at, created_at, updated_at) "
        "VALUES ('Ada', 12.5, 'paid', 'ada@example.org', '2024-03-01T10:00:00+00:00', "
        "'2024-03-01T10:00:00+00:00', '2024-03-01T10:00:00+00:00')"
    )
    connection.commit()
    connection.close()
    env = {"DATA_DIR": str(data)}
    before = rows(env, data, "orders")

    grown = changed_blueprint(blueprint, tmp_path / "shop2.yaml", grow)
    result = regenerate(tmp_path, grown)
    assert result.returncode == 0, result.stderr
    assert "    create table orders (or adopt it, keeping its rows)" in result.stdout
    applied = migrate(project, env)
    assert applied.returncode == 0, applied.stderr
    (row,) = rows(env, data, "orders")
    assert {key: row[key] for key in before[0]} == before[0]
    assert row["notes"] == "none yet"
    with GunicornServer(project, tmp_path / "run", {"DATA_DIR": str(data)}) as server:
        assert wait_ready(server.url) == 200
        served = http("GET", f"{server.url}/orders/{row['id']}").json()
        assert served["customer"] == "Ada" and served["notes"] == "none yet"
        retry = {"customer": "Bo", "total": 1, "email": "bo@example.org"}
        key = {"Idempotency-Key": "adopted-1"}
        first = http("POST", f"{server.url}/orders", retry, headers=key)
        second = http("POST", f"{server.url}/orders", retry, headers=key)
        assert first.status == 201 and second.json()["id"] == first.json()["id"]


def test_a_database_ahead_of_the_code_stays_ready(shop, tmp_path):
    """While a rollout runs, the next release's (additive) revision may already be applied
    under instances of this code: they stay ready and keep serving."""
    project, _ = shop
    data = tmp_path / "run" / "data"
    with GunicornServer(project, tmp_path / "run") as server:
        assert wait_ready(server.url) == 200
        created = http("POST", f"{server.url}/orders", ORDERS[1]).json()
    connection = sqlite3.connect(data / "order_service.sqlite3")
    with connection:
        connection.execute('ALTER TABLE "orders" ADD COLUMN "added_by_the_next_release" TEXT')
        connection.execute("UPDATE alembic_version SET version_num = '0002'")
    connection.close()
    with GunicornServer(project, tmp_path / "run") as server:
        assert http("GET", f"{server.url}/ready").status == 200
        assert http("GET", f"{server.url}/orders/{created['id']}").json() == created
        assert http("POST", f"{server.url}/orders", ORDERS[2]).status == 201


def test_a_field_added_back_with_another_type_is_refused(shop, tmp_path):
    """A removed field keeps its column and values: adding it back as another type would
    serve them as what they are not."""
    project, blueprint = shop
    without = changed_blueprint(
        blueprint,
        tmp_path / "without.yaml",
        lambda b: b["components"][0]["config"]["fields"].pop("paid_at"),
    )
    assert regenerate(tmp_path, without).returncode == 0
    before = snapshot(project)

    def retyped(document: dict) -> None:
        document["components"][0]["config"]["fields"]["paid_at"] = {"type": "integer"}

    back = changed_blueprint(without, tmp_path / "back.yaml", retyped)
    result = regenerate(tmp_path, back)
    assert result.returncode != 0
    _, positions = read_file(back)
    line, column = positions.locate(("components", 0, "config", "fields", "paid_at", "type"))
    assert (
        f"{back}:{line}:{column}: field orders.paid_at was removed earlier with type datetime"
        in result.stderr
    ), result.stderr
    assert snapshot(project) == before


def test_printing_sql_without_the_database_says_so(shop):
    project, _ = shop
    printed = migrate(project, {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "--sql")
    assert printed.returncode == 0
    assert "warning: the database could not be asked for its revision" in printed.stderr
    assert "-- the database could not be asked for its revision" in printed.stdout
    assert "Running upgrade  -> 0001" in printed.stdout


def connect(env: dict, data_dir: Path):
    """A connection to the service's database, around the service (autocommit)."""
    if env.get("DATABASE_URL"):
        import psycopg2

        connection = psycopg2.connect(env["DATABASE_URL"])
        connection.autocommit = True
        return connection
    return sqlite3.connect(data_dir / "order_service.sqlite3", isolation_level=None)


def test_the_database_refuses_rows_that_break_the_blueprint(shop, tmp_path, backend):
    """required is NOT NULL, enum, minimum and max_length are CHECK constraints, unique a
    unique index: a row written around the API that breaks one is refused by the database."""
    project, _ = shop
    data = tmp_path / "data"
    env = {**backend, "DATA_DIR": str(data)}
    assert migrate(project, env).returncode == 0
    connection = connect(env, data)
    p = "%s" if backend else "?"
    insert = (
        f"INSERT INTO orders (customer, total, status, email, created_at, updated_at) "
        f"VALUES ({p}, {p}, {p}, {p}, '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')"
    )
    valid = ("Ada", 1.5, "new", "ada@example.org")
    cursor = connection.cursor()
    cursor.execute(insert, valid)
    refused = {
        "required customer": (None, 1.5, "new", "b@example.org"),
        "max_length 120": ("x" * 121, 1.5, "new", "c@example.org"),
        "minimum 0": ("Bo", -0.01, "new", "d@example.org"),
        "enum": ("Bo", 1.5, "lost", "e@example.org"),
        "unique email": ("Bo", 1.5, "new", "ada@example.org"),
    }
    errors = (sqlite3.IntegrityError,)
    if backend:
        import psycopg2

        errors = (psycopg2.IntegrityError,)
    for rule, values in refused.items():
        with pytest.raises(errors):
            cursor.execute(insert, values)
            pytest.fail(f"{rule}: the database took {values}")
    cursor.execute("SELECT count(*) FROM orders")
    assert cursor.fetchone()[0] == 1
    connection.close()


def raise_total_maximum(blueprint: dict) -> None:
    blueprint["components"][0]["config"]["fields"]["total"]["maximum"] = 100


def test_a_constraint_that_existing_rows_break_stops_the_migration(shop, tmp_path, backend):
    """Adding a constraint some rows break: the migration stops naming the constraint and how
    many rows break it, and nothing is applied (revision, tables and rows as they were)."""
    project, blueprint = shop
    run = tmp_path / "run"
    data = run / "data"
    env = {**backend, "DATA_DIR": str(data)}
    with GunicornServer(project, run, backend) as server:
        assert wait_ready(server.url) == 200
        for order in ORDERS:  # totals 12.5, 0.0 and 99999.75
            assert http("POST", f"{server.url}/orders", order).status == 201
    capped = changed_blueprint(blueprint, tmp_path / "capped.yaml", raise_total_maximum)
    assert regenerate(tmp_path, capped).returncode == 0
    before = rows(env, data, "orders")
    connection = connect(env, data)
    version = "SELECT version_num FROM alembic_version"
    applied = migrate(project, env)
    assert applied.returncode == 3, applied
    assert applied.stderr.strip() == (
        'error: constraint orders_total_maximum (CHECK "total" <= 100): 1 existing row breaks '
        "it; change or remove those rows, or the blueprint, and migrate again; nothing was "
        "applied"
    )
    assert rows(env, data, "orders") == before
    cursor = connection.cursor()
    cursor.execute(version)
    assert cursor.fetchone()[0] == "0001"
    # Nothing half-applied: a total above the new maximum is still taken.
    p = "%s" if backend else "?"
    cursor.execute(
        "INSERT INTO orders (customer, total, email, created_at, updated_at) VALUES "
        f"('Kept', 500, {p}, '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
        ("kept@example.org",),
    )
    # Started as shipped (MIGRATE_ON_START), the service is not ready and says why.
    with GunicornServer(project, run, backend) as server:
        refused = "MIGRATE_ON_START: refused: constraint orders_total_maximum"
        reasons = []
        for _ in range(100):  # each worker's child process refuses it: within seconds
            ready = http("GET", f"{server.url}/ready")
            assert ready.status == 503
            reasons.append(ready.json()["checks"]["orders"])
            if refused in reasons[-1]:
                break
            time.sleep(0.1)
        assert refused in reasons[-1], reasons[-3:]
        cursor.execute("DELETE FROM orders WHERE total > 100")  # the user's fix
        # (another worker's thread, still trying, may apply it first)
        fixed = migrate(project, env)
        assert fixed.returncode == 0 and fixed.stdout.strip().endswith("at revision 0002")
        assert wait_ready(server.url) == 200  # without a restart
    connection.close()


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            lambda b: b["components"][0]["config"]["fields"].update(
                buyer={"type": "string", "renamed_from": "purchaser"}
            ),
            ("components", 0, "config", "fields", "buyer", "renamed_from"),
            "renamed_from purchaser: store orders of the blueprint this project was generated "
            "from has no such field",
        ),
        (
            lambda b: (
                b["components"][0].update(name="sales")
                or b["components"][0]["config"].update(renamed_from="purchases")
                or b["components"][1]["config"].update(store="sales")
                or b.update(bindings=[{"from": "orders_api", "to": "sales"}])
            ),
            ("components", 0, "config", "renamed_from"),
            "renamed_from purchases: the blueprint this project was generated from has no such "
            "store",
        ),
        (
            lambda b: b["components"][0]["config"].update(drop_columns=["comment"]),
            ("components", 0, "config", "drop_columns", 0),
            "table orders never had a column comment: nothing to drop",
        ),
        (
            lambda b: b.update(drop_tables=["archive"]),
            ("drop_tables", 0),
            "no table archive was ever made: nothing to drop",
        ),
    ],
    ids=["field renamed from nothing", "store renamed from nothing", "drop column", "drop table"],
)
def test_a_change_naming_what_never_existed_is_refused_where_it_is_written(
    shop, tmp_path, change, path, message
):
    project, blueprint = shop
    before = snapshot(project)
    changed = changed_blueprint(blueprint, tmp_path / "changed.yaml", change)
    result = regenerate(tmp_path, changed)
    assert result.returncode == 1, result.stdout
    _, positions = read_file(changed)
    line, column = positions.locate(path)
    assert f"error: {changed}:{line}:{column}: {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(project) == before


def test_widening_refuses_integers_a_number_cannot_keep(shop, tmp_path, backend):
    project, blueprint = shop
    run = tmp_path / "run"
    env = {**backend, "DATA_DIR": str(run / "data")}

    def with_quantity(document: dict) -> None:
        document["components"][0]["config"]["fields"]["quantity"] = {"type": "integer"}

    counted = changed_blueprint(blueprint, tmp_path / "counted.yaml", with_quantity)
    assert regenerate(tmp_path, counted).returncode == 0
    with GunicornServer(project, run, backend) as server:
        assert wait_ready(server.url) == 200
        huge = {**ORDERS[1], "quantity": 2**53 + 1}
        assert http("POST", f"{server.url}/orders", huge).status == 201
        assert http("POST", f"{server.url}/orders", {**ORDERS[2], "quantity": 7}).status == 201

    def widened(document: dict) -> None:
        fields = document["components"][0]["config"]["fields"]
        fields["quantity"]["type"] = "number"
        # A field changed before it in the same revision: on SQLite, that step rebuilds the
        # table with every column as the blueprint now says, quantity as REAL included.
        fields["customer"]["max_length"] = 200

    assert (
        regenerate(tmp_path, changed_blueprint(counted, tmp_path / "w.yaml", widened)).returncode
        == 0
    )
    applied = migrate(project, env)
    assert applied.returncode == 3
    assert (
        "orders.quantity as a number (exact for integers up to 9007199254740992): 1 existing "
        "row breaks it" in applied.stderr
    ), applied.stderr
    assert [row["quantity"] for row in rows(env, run / "data", "orders")] == [2**53 + 1, 7]


def test_printing_the_sql_of_an_index_revision(shop, tmp_path):
    """An index added to a table that holds rows: built CONCURRENTLY on PostgreSQL, outside
    a transaction, in a revision of its own."""
    project, blueprint = shop

    def indexed(document: dict) -> None:
        document["components"][0]["config"]["fields"]["customer"]["index"] = True

    assert (
        regenerate(tmp_path, changed_blueprint(blueprint, tmp_path / "i.yaml", indexed)).returncode
        == 0
    )
    printed = migrate(project, {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "--sql")
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout
    assert "Running upgrade 0001 -> 0002" in text
    index = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_customer_index" ON "orders" '
    index += '("customer", "id")'
    assert index in text
    assert text.rindex("COMMIT", 0, text.index(index)) > text.index("Running upgrade 0001 -> 0002")


def test_an_index_an_interrupted_build_left_invalid_is_built_again(
    shop, tmp_path, postgres_database
):
    """CREATE INDEX CONCURRENTLY that fails or is interrupted leaves an invalid index, which
    IF NOT EXISTS would take for done: the migration drops it and builds it again."""
    project, blueprint = shop
    env = {"DATABASE_URL": postgres_database}
    assert migrate(project, env).returncode == 0
    connection = connect(env, tmp_path)
    cursor = connection.cursor()
    cursor.execute('CREATE INDEX "orders_customer_index" ON "orders" ("customer", "id")')
    # What an interrupted build leaves: the index, marked invalid in the catalog.
    index = "indexrelid = 'orders_customer_index'::regclass"
    cursor.execute(f"UPDATE pg_index SET indisvalid = false WHERE {index}")
    valid = f"SELECT indisvalid FROM pg_index WHERE {index}"
    cursor.execute(valid)
    assert cursor.fetchone() == (False,)

    def indexed(document: dict) -> None:
        document["components"][0]["config"]["fields"]["customer"]["index"] = True

    assert (
        regenerate(tmp_path, changed_blueprint(blueprint, tmp_path / "i.yaml", indexed)).returncode
        == 0
    )
    applied = migrate(project, env)
    assert applied.returncode == 0, applied.stderr
    cursor.execute(valid)
    assert cursor.fetchone() == (True,)
    connection.close()


def test_a_decimal_range_and_enum_are_the_blueprints_exactly(shop, tmp_path, postgres_database):
    """A decimal's minimum, written in the blueprint as a YAML number (0.1), is checked by the
    database as the decimal it says, not as the float it parses to (0.1000000000000000055);
    so is its enum."""
    project, blueprint = shop

    def priced(document: dict) -> None:
        fields = document["components"][0]["config"]["fields"]
        fields["price"] = {"type": "decimal", "minimum": 0.1, "maximum": 99.9}
        fields["discount"] = {"type": "decimal", "enum": ["0.1", "0.25"]}

    assert (
        regenerate(tmp_path, changed_blueprint(blueprint, tmp_path / "p.yaml", priced)).returncode
        == 0
    )
    env = {"DATABASE_URL": postgres_database}
    with GunicornServer(project, tmp_path / "run", env) as server:
        assert wait_ready(server.url) == 200
        for number, (price, discount) in enumerate([("0.10", "0.1"), ("99.90", "0.25")]):
            order = {**ORDERS[1], "email": f"d{number}@example.org"}
            created = http(
                "POST", f"{server.url}/orders", {**order, "price": price, "discount": discount}
            )
            assert created.status == 201, created.body
        refused = http("POST", f"{server.url}/orders", {**ORDERS[2], "price": "0.09"})
        assert refused.status == 422
