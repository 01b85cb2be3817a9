"""The generated service under real Gunicorn (2 workers), real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import (
    EXAMPLES_DIR,
    ONE_THREAD,
    ONE_THREAD_BECAUSE,
    SEED_BLUEPRINT,
    WORKER_MODELS,
    bake,
    run_python,
)

from service_validator import dockerfile
from service_validator.dynamic_checks import metric_total, metrics_count, settled_metric_total
from service_validator.server import GUNICORN, GunicornServer, http, shell_environment


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


HEALTH_COUNT = "flask_http_request_duration_seconds_count"


def metrics_add_up_across_workers(server: GunicornServer) -> None:
    """The validator's check: /health requests until both workers have served some, and the
    counters in /metrics, summed over the workers, equal the number sent."""
    metrics_count(server)
    text = http("GET", f"{server.url}/metrics").body.decode()
    assert metric_total(text, "flask_http_request_total") == metric_total(text, HEALTH_COUNT)


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
    probe = http("GET", f"{server.url}/orders", headers={"X-Request-ID": "trace-42"})
    assert probe.headers["X-Request-ID"] == "trace-42"
    server.stop()
    lines = server.access_lines()
    traced = [line for line in lines if line["request_id"] == "trace-42"]
    assert traced and traced[0]["method"] == "GET" and traced[0]["path"] == "/orders"
    assert traced[0]["status"] == 200 and traced[0]["duration_ms"] >= 0
    assert all(line["request_id"] for line in lines)


def test_gunicorn_check_config_passes_and_leaves_nothing_behind(order_service, tmp_path):
    """--check-config loads the configuration and the app, then exits: the metrics directory
    the configuration made (under TMPDIR) is gone with it."""
    result = subprocess.run(
        [GUNICORN, "--check-config", "-c", "gunicorn.conf.py", "main:app"],
        cwd=order_service,
        env={**shell_environment(), "DATA_DIR": str(tmp_path / "data"), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        list(tmp_path.glob("service-metrics-*")) == []
    )  # the name the servers use, seen live below


def test_service_on_sqlite(order_service, tmp_path):
    with GunicornServer(order_service, tmp_path) as server:
        exercise_order_service(server)
    assert (tmp_path / "data" / "order_service.sqlite3").exists()


def test_service_with_one_thread_per_worker(order_service, tmp_path):
    """GUNICORN_THREADS=1 has a worker model of its own (the loop thread answers each
    request and closes its connection): the whole exercise, and every response says close."""
    with GunicornServer(order_service, tmp_path, ONE_THREAD, because=ONE_THREAD_BECAUSE) as server:
        answer = exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == ["200"]
        assert b"\r\nConnection: close\r\n" in answer
        exercise_order_service(server)  # ends with a graceful stop


def test_service_on_postgresql(order_service, tmp_path, postgres_database):
    with GunicornServer(order_service, tmp_path, {"DATABASE_URL": postgres_database}) as server:
        exercise_order_service(server)


def test_service_on_postgresql_with_preload(order_service, tmp_path, postgres_database):
    env = {"DATABASE_URL": postgres_database, "GUNICORN_PRELOAD": "true"}
    # Without it (the default), the app loads in each worker: test_service_on_postgresql.
    because = "preload_app is a start path of its own: the app is imported in the master"
    with GunicornServer(order_service, tmp_path, env, because=because) as server:
        exercise_order_service(server)


def test_legacy_seed_service_on_postgresql(seed_service, tmp_path, postgres_database):
    with GunicornServer(seed_service, tmp_path, {"DATABASE_URL": postgres_database}) as server:
        assert http("GET", f"{server.url}/ready").status == 200
        crud_round_trip(
            server.url, "/test_api", {"name": "x", "n": 1}, {"name": "y", "tags": ["a"]}
        )


def refuses_to_start(server: GunicornServer) -> None:
    """The server must exit before it answers; one that starts anyway is stopped, not leaked."""
    try:
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    assert server.process.returncode not in (0, None)


def test_invalid_configuration_stops_start_up_with_one_line(order_service, tmp_path):
    env = {"ORDERS_API_PAGE_SIZE": "lots"}
    server = GunicornServer(order_service, tmp_path, env, because="an invalid setting")
    refuses_to_start(server)
    errors = server.stderr().strip().splitlines()
    assert errors == ["configuration error: ORDERS_API_PAGE_SIZE='lots' is not a whole number"]


GUNICORN_SETTINGS_GONE_WRONG = [
    ("BIND", "nohost", "BIND='nohost' is not HOST:PORT (port 1..65535) or unix:PATH"),
    ("PORT", "http", "PORT='http' is not a whole number"),
    ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY=0 is outside 1..1024"),
    ("GUNICORN_THREADS", "four", "GUNICORN_THREADS='four' is not a whole number"),
    ("GUNICORN_TIMEOUT", "abc", "GUNICORN_TIMEOUT='abc' is not a whole number"),
    ("GUNICORN_GRACEFUL_TIMEOUT", "-1", "GUNICORN_GRACEFUL_TIMEOUT=-1 is outside 0..86400"),
    ("GUNICORN_KEEPALIVE", "5s", "GUNICORN_KEEPALIVE='5s' is not a whole number"),
    ("GUNICORN_MAX_REQUESTS", "1e4", "GUNICORN_MAX_REQUESTS='1e4' is not a whole number"),
    (
        "GUNICORN_MAX_REQUESTS_JITTER",
        "-5",
        "GUNICORN_MAX_REQUESTS_JITTER=-5 is outside 0..1000000000",
    ),
    (
        "GUNICORN_PRELOAD",
        "maybe",
        "GUNICORN_PRELOAD='maybe' is not one of 1/true/yes/on/0/false/no/off",
    ),
    ("LOG_LEVEL", "loud", "LOG_LEVEL='LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
    (
        "GUNICORN_REQUEST_READ_TIMEOUT",
        "0",
        "GUNICORN_REQUEST_READ_TIMEOUT=0 is outside 1..3600",
    ),
    ("READY_TIMEOUT_MS", "soon", "READY_TIMEOUT_MS='soon' is not a whole number"),
    # The request deadline must end a request before Gunicorn kills its worker (30 s) ...
    ("REQUEST_TIMEOUT_MS", "30000", "REQUEST_TIMEOUT_MS=30000 is not below GUNICORN_TIMEOUT=30 s"),
    # ... and the database's statement timeout comes first (REQUEST_TIMEOUT_MS is 10000).
    (
        "DB_STATEMENT_TIMEOUT_MS",
        "20000",
        "DB_STATEMENT_TIMEOUT_MS=20000 is above REQUEST_TIMEOUT_MS=10000",
    ),
]


@pytest.mark.parametrize(("variable", "value", "message"), GUNICORN_SETTINGS_GONE_WRONG)
def test_invalid_gunicorn_setting_stops_start_up_with_one_line(
    order_service, tmp_path, variable, value, message
):
    """Each Gunicorn setting is checked like the app's: one line naming the variable, no
    traceback, and no metrics directory left behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {variable: value, "TMPDIR": str(temp)}
    because = "an invalid value; TMPDIR to see that no metrics directory is left behind"
    server = GunicornServer(order_service, tmp_path, env, because=because)
    refuses_to_start(server)
    assert server.stderr().strip().splitlines() == [f"configuration error: {message}"]
    assert list(temp.iterdir()) == []


def test_dockerfile_cmd_counts_requests_across_two_workers(order_service, tmp_path):
    """What the container runs, run directly (no Docker engine here): CMD, with exactly the
    Dockerfile's ENV plus what a deployment chooses (listen on loopback, two workers, a data
    directory); /metrics adds up what both workers served. Then HEALTHCHECK tells up from down."""
    command = dockerfile.exec_form(order_service, "CMD")
    assert command[:3] == ["gunicorn", "--config", "gunicorn.conf.py"]
    for step in dockerfile.python_run_steps(order_service):  # the image's compileall
        subprocess.run(step, cwd=order_service, check=True, timeout=120)
    base_env = dockerfile.environment(order_service, home=tmp_path)
    assert base_env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "PROMETHEUS_MULTIPROC_DIR" not in base_env
    server = GunicornServer(order_service, tmp_path, base_env=base_env, command=command)
    assert server.env["PORT"] == "8080" != str(server.port)  # the check must follow BIND
    healthcheck = dockerfile.exec_form(order_service, "HEALTHCHECK")
    in_image = {"cwd": order_service, "capture_output": True, "timeout": 30}  # WORKDIR
    assert healthcheck[0] == "python"
    server.start()
    try:
        metrics_add_up_across_workers(server)
        probe = subprocess.run(healthcheck, **in_image, env=server.env)
        assert probe.returncode == 0, probe.stderr
        by_port = {**server.env, "PORT": str(server.port)}
        del by_port["BIND"]  # as the image runs: no BIND, Gunicorn on every interface at PORT
        probe = subprocess.run(healthcheck, **in_image, env=by_port)
        assert probe.returncode == 0, probe.stderr
    finally:
        assert server.stop() == 0
    probe = subprocess.run(healthcheck, **in_image, env=server.env)
    assert probe.returncode != 0


def test_two_servers_on_one_host_keep_their_own_files(order_service, tmp_path):
    """Each server makes its own Prometheus directory and removes it on exit, so counts never
    mix between services on one host, and neither opens Gunicorn's per-user control socket
    (which every server of that user would share, and remove when it stops)."""
    temp, home = tmp_path / "tmp", tmp_path / "home"
    temp.mkdir()
    home.mkdir()
    env = {"TMPDIR": str(temp), "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}
    because = "TMPDIR, HOME, XDG_RUNTIME_DIR: where the servers could leave files, watched here"
    with (
        GunicornServer(order_service, tmp_path / "one", env, because=because) as one,
        GunicornServer(order_service, tmp_path / "two", env, because=because) as two,
    ):
        assert len(list(temp.glob("service-metrics-*"))) == 2
        for _ in range(7):
            assert http("GET", f"{one.url}/health").status == 200
        assert two.stop() == 0  # one server stopping leaves the other's files alone
        assert len(list(temp.glob("service-metrics-*"))) == 1
        for _ in range(3):
            assert http("GET", f"{one.url}/health").status == 200
        health = settled_metric_total(one.url, HEALTH_COUNT, url_rule="/health")
        assert health == 11  # 10, and its start-up probe
        assert list(home.rglob("*")) == []  # no control socket, nothing else
    assert list(temp.iterdir()) == []


def migrated_then_run(project, database_url: str, script: str) -> subprocess.CompletedProcess:
    """`python -m app.migrate` on the database, as a deployment runs it, then the script."""
    env = {"DATABASE_URL": database_url}
    migrated = run_python(project, env, "-m", "app.migrate")
    assert migrated.returncode == 0, migrated.stderr
    return run_python(project, env, "-c", script)


FORK_SCRIPT = """
import os, sys
from app import create_app
from app.stores.orders_sync import store
create_app().app_context().push()
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
    result = migrated_then_run(order_service, postgres_database, FORK_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['child', 'parent']"


# A worker's main thread is done (Gunicorn returns from its loop) while a request thread still
# serves a request that needs a new connection: it must get one, not an executor's refusal.
LAST_REQUEST_SCRIPT = """
import threading, time
from app import create_app
client = create_app().test_client()

def last_request():
    time.sleep(0.3)  # after the main thread has returned
    response = client.get("/ready")  # the first request: it connects
    print(response.status_code, flush=True)

threading.Thread(target=last_request).start()
"""


def test_a_request_in_flight_while_the_process_exits_still_connects(
    order_service, postgres_database
):
    result = migrated_then_run(order_service, postgres_database, LAST_REQUEST_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200", result.stdout + result.stderr


# A process starting on an empty database with the default MIGRATE_ON_START: the migration
# thread that Gunicorn's post_worker_init starts, then /ready until it answers 200.
STARTUP_SCRIPT = """
import time
from app import create_app
app = create_app()
app.extensions["database"].schema.start()
client = app.test_client()
deadline = time.monotonic() + 30
while (response := client.get("/ready")).status_code != 200 and time.monotonic() < deadline:
    time.sleep(0.1)
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


def exchange(port: int, *parts: bytes, pause: float = 0.0, until: bytes = b"") -> bytes:
    """Send parts on one connection, pause seconds apart; read until the connection closes,
    `until` has arrived, or 5 s of silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for n, part in enumerate(parts):
            if n and pause:
                time.sleep(pause)
            connection.sendall(part)
        received = b""
        try:
            while not (until and until in received):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pass
    return received


def statuses(received: bytes) -> list[str]:
    """The status codes of the responses in received (a body is not followed by a line end,
    so the next status line may start mid-line)."""
    return [code.decode() for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


@pytest.mark.parametrize("settings", WORKER_MODELS)
def test_requests_are_read_in_full_before_a_thread_takes_them(order_service, tmp_path, settings):
    """The worker reads each request in its event loop; what it does with framing must match
    what Gunicorn's parser then reads: pipelining, chunked bodies, bodies in pieces,
    Expect: 100-continue, a body above the limit, conflicting lengths."""
    json_head = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    because = ONE_THREAD_BECAUSE if settings else None
    with GunicornServer(order_service, tmp_path, settings, because=because) as server:
        port = server.port
        pipelined = exchange(
            port,
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /orders?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        if settings:
            # One thread closes the connection after each response, as Gunicorn's sync worker
            # does: the first answer arrives whole (not cut by a reset, though the second
            # request was still unread); the client sends the second again (RFC 9112, 9.3.2).
            assert statuses(pipelined) == ["200"]
            assert b"\r\nConnection: close\r\n" in pipelined
            assert pipelined.endswith(b'{"status": "ok"}')
        else:
            assert statuses(pipelined) == ["200", "200"]

        body = b'{"customer": "in pieces"}'
        pieces = exchange(
            port,
            json_head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
            body[:10],
            body[10:],
            pause=0.3,
        )
        assert statuses(pieces) == ["201"]
        assert b'"customer": "in pieces"' in pieces

        chunked = exchange(
            port,
            json_head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            b"%x\r\n%s\r\n" % (len(body), body),
            b"0\r\n\r\n",
            pause=0.3,
        )
        assert statuses(chunked) == ["201"]

        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(
                json_head + b"Content-Length: %d\r\nExpect: 100-continue\r\n"
                b"Connection: close\r\n\r\n" % len(body)
            )
            assert connection.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            connection.sendall(body)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert statuses(answer)[-1] == "201"

        too_large = exchange(
            port, json_head + b"Content-Length: 2000000\r\n\r\n{", until=b"\r\n\r\n"
        )
        assert statuses(too_large) == ["413"]

        conflicting = exchange(
            port, json_head + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
        )
        assert statuses(conflicting) == ["400"]

        listed = http("GET", f"{server.url}/orders?limit=10").json()["items"]
        assert [record["customer"] for record in listed] == ["in pieces"] * 3


def test_requests_gunicorn_refuses_are_answered_as_problems(order_service, tmp_path):
    """Gunicorn answers what it cannot parse itself (its page is HTML); the worker makes those
    answers problem+json, as the OpenAPI document says every error is."""
    refused = {
        "414": b"GET /orders?customer=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "431": b"GET /orders HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n",
        "400": b"GET /orders HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    }
    with GunicornServer(order_service, tmp_path) as server:
        for status, request in refused.items():
            answer = exchange(server.port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert statuses(answer) == [status], answer[:300]
            assert b"\r\nContent-Type: application/problem+json\r\n" in head
            problem = json.loads(body)
            assert problem["status"] == int(status) and problem["title"], problem
        assert http("GET", f"{server.url}/health").status == 200
