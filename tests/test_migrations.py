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
        "    add column orders.notes",
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
