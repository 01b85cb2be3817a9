"""The generated service under real Gunicorn (2 workers), real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import EXAMPLES_DIR, SEED_BLUEPRINT, bake

from service_validator.dynamic_checks import metric_total
from service_validator.server import GUNICORN, GunicornServer, http

REQUESTS_PER_ROUND = 40
MAX_ROUNDS = 25


@pytest.fixture(scope="module")
def order_service(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("bake"), blueprint=str(EXAMPLES_DIR / "order_service.yaml"))


@pytest.fixture(scope="module")
def seed_service(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("bake"), blueprint=str(SEED_BLUEPRINT))


def crud_round_trip(url: str, path: str, first: dict, second: dict) -> None:
    created = http("POST", f"{url}{path}", first)
    assert created.status == 201, created.body
    record = created.json()
    assert created.headers["Location"] == f"{path}/{record['id']}"
    assert {key: record[key] for key in first} == first
    item = f"{url}{path}/{record['id']}"
    assert http("GET", item).json() == record
    listed = http("GET", f"{url}{path}?limit=100").json()
    assert record in listed["items"]
    replaced = http("PUT", item, second)
    assert replaced.status == 200
    assert {key: replaced.json()[key] for key in second} == second
    key, value = next(iter(first.items()))
    patched = http("PATCH", item, {key: value})
    assert patched.status == 200 and patched.json()[key] == value
    assert http("DELETE", item).status == 204
    missing = http("GET", item)
    assert missing.status == 404
    assert missing.headers["Content-Type"] == "application/problem+json"


def metrics_add_up_across_workers(server: GunicornServer) -> None:
    """Send /health requests until both workers have served some (bounded), then the summed
    counter in /metrics must equal the number sent."""
    sent = 0
    writers: set[str] = set()
    with ThreadPoolExecutor(16) as pool:
        for _ in range(MAX_ROUNDS):
            urls = [f"{server.url}/health"] * REQUESTS_PER_ROUND
            statuses = list(pool.map(lambda url: http("GET", url).status, urls))
            assert statuses == [200] * REQUESTS_PER_ROUND
            sent += REQUESTS_PER_ROUND
            writers = {p.name.split("_")[-1] for p in server.metrics_dir.glob("counter_*.db")}
            if len(writers) >= 2:
                break
    assert len(writers) >= 2, f"after {sent} requests only {writers} served: one worker only"
    text = http("GET", f"{server.url}/metrics").body.decode()
    name = "flask_http_request_duration_seconds_count"
    counted = metric_total(text, name, url_rule="/health", status="200")
    assert counted == sent + 1  # the start-up probe asked /health once
    assert metric_total(text, "flask_http_request_total") == metric_total(text, name)


def access_lines(server: GunicornServer) -> list[dict]:
    lines = [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "access"]


ORDER = {"customer": "Ada", "total": 12.5, "status": "paid", "email": "ada@example.org"}
ORDER_2 = {"customer": "Grace", "total": 3.0, "status": "new", "email": "grace@example.org"}


def exercise_order_service(server: GunicornServer) -> None:
    ready = http("GET", f"{server.url}/ready")
    assert ready.status == 200 and ready.json()["checks"] == {"orders": "ok"}
    crud_round_trip(server.url, "/orders", ORDER, ORDER_2)
    invalid = http("POST", f"{server.url}/orders", {"total": -1, "status": "lost"})
    assert invalid.status == 422
    pointers = {error["pointer"] for error in invalid.json()["errors"]}
    assert pointers == {"/customer", "/total", "/status"}
    metrics_add_up_across_workers(server)
    lines = access_lines(server)
    probe = http("GET", f"{server.url}/orders", headers={"X-Request-ID": "trace-42"})
    assert probe.headers["X-Request-ID"] == "trace-42"
    server.stop()
    lines = access_lines(server)
    traced = [line for line in lines if line["request_id"] == "trace-42"]
    assert traced and traced[0]["method"] == "GET" and traced[0]["path"] == "/orders"
    assert traced[0]["status"] == 200 and traced[0]["duration_ms"] >= 0
    assert all(line["request_id"] for line in lines)


def test_gunicorn_check_config_passes(order_service):
    result = subprocess.run(
        [GUNICORN, "--check-config", "-c", "gunicorn.conf.py", "main:app"],
        cwd=order_service,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_service_on_sqlite(order_service, tmp_path):
    with GunicornServer(order_service, tmp_path) as server:
        exercise_order_service(server)
    assert (tmp_path / "data" / "order_service.sqlite3").exists()


def test_service_on_postgresql(order_service, tmp_path, postgres_database):
    with GunicornServer(order_service, tmp_path, {"DATABASE_URL": postgres_database}) as server:
        exercise_order_service(server)


def test_service_on_postgresql_with_preload(order_service, tmp_path, postgres_database):
    env = {"DATABASE_URL": postgres_database, "GUNICORN_PRELOAD": "true"}
    with GunicornServer(order_service, tmp_path, env) as server:
        exercise_order_service(server)


def test_legacy_seed_service_on_postgresql(seed_service, tmp_path, postgres_database):
    with GunicornServer(seed_service, tmp_path, {"DATABASE_URL": postgres_database}) as server:
        assert http("GET", f"{server.url}/ready").status == 200
        crud_round_trip(
            server.url, "/test_api", {"name": "x", "n": 1}, {"name": "y", "tags": ["a"]}
        )


def test_invalid_configuration_stops_start_up_with_one_line(order_service, tmp_path):
    server = GunicornServer(order_service, tmp_path, {"ORDERS_API_PAGE_SIZE": "lots"})
    with pytest.raises(RuntimeError):
        server.start()
    assert server.process.returncode != 0
    errors = server.stderr().strip().splitlines()
    assert errors == ["configuration error: ORDERS_API_PAGE_SIZE='lots' is not a whole number"]


def _dockerfile_instruction(project, name: str) -> list[str]:
    """The JSON-array command of a Dockerfile instruction (CMD, or HEALTHCHECK's CMD)."""
    text = (project / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return json.loads(line[line.index("[") :])


def test_dockerfile_cmd_serves_and_its_healthcheck_tells(order_service, tmp_path):
    """What the container runs, run directly (no Docker engine here): CMD, then HEALTHCHECK."""
    command = _dockerfile_instruction(order_service, "CMD")
    assert command[:3] == ["gunicorn", "--config", "gunicorn.conf.py"]
    healthcheck = _dockerfile_instruction(order_service, "HEALTHCHECK")
    server = GunicornServer(order_service, tmp_path)
    env = {**server.env, "PORT": str(server.port)}
    del env["BIND"]
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    server.env = env
    server.start()
    try:
        assert healthcheck[0] == "python"
        probe = subprocess.run(healthcheck, env=env, capture_output=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
    finally:
        assert server.stop() == 0
    probe = subprocess.run(healthcheck, env=env, capture_output=True, timeout=30)
    assert probe.returncode != 0


FORK_SCRIPT = """
import os, sys
from app import create_app
from app.stores.orders_sync import store
create_app()
parent = store.create({"customer": "parent"})
pid = os.fork()
if pid == 0:
    child = store.create({"customer": "child"})
    os._exit(0 if store.get(child["id"]) else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the child could not use the store"
assert store.get(parent["id"]) == parent, "the parent's pool broke after the fork"
items, _ = store.list(limit=10)
print(sorted(item["customer"] for item in items))
"""


def test_store_is_fork_safe_on_postgresql(order_service, postgres_database):
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT],
        cwd=order_service,
        env={**os.environ, "DATABASE_URL": postgres_database},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['child', 'parent']"


STARTUP_SCRIPT = """
from app import create_app
client = create_app().test_client()
response = client.get("/ready")
assert response.status_code == 200, response.get_data(as_text=True)
"""


def test_concurrent_start_up_creates_the_schema_once(order_service, postgres_database):
    env = {**os.environ, "DATABASE_URL": postgres_database}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTUP_SCRIPT],
            cwd=order_service,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    import psycopg2

    with psycopg2.connect(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'orders'")
        assert cursor.fetchone()[0] == 1
    connection.close()
