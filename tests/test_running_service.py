"""The generated service under real Gunicorn (2 workers), real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import EXAMPLES_DIR, SEED_BLUEPRINT, bake
from live_server import GUNICORN, GunicornServer, http

HEALTH_REQUESTS = 60


@pytest.fixture(scope="module")
def order_service(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("bake"), blueprint=str(EXAMPLES_DIR / "order_service.yaml"))


@pytest.fixture(scope="module")
def seed_service(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("bake"), blueprint=str(SEED_BLUEPRINT))


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include the given ones."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


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
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: http("GET", f"{server.url}/health").status, range(HEALTH_REQUESTS))
        )
    assert statuses == [200] * HEALTH_REQUESTS
    text = http("GET", f"{server.url}/metrics").body.decode()
    name = "flask_http_request_duration_seconds_count"
    counted = metric_total(text, name, url_rule="/health", status="200")
    assert counted == HEALTH_REQUESTS + 1  # the start-up probe asked /health once
    everything = metric_total(text, "flask_http_request_total")
    per_route = metric_total(text, name)
    assert everything == per_route
    writers = {path.name.split("_")[-1] for path in server.metrics_dir.glob("counter_*.db")}
    assert len(writers) >= 2, f"only {writers} wrote metrics: not spread over the workers"


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
