"""Faults under real Gunicorn and PostgreSQL: database outage, slow statements, worker crashes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from http.client import HTTPException
from pathlib import Path

import psycopg2
import pytest
import yaml
from conftest import EXAMPLES_DIR, bake
from pg_cluster import ThrowawayCluster

from service_validator.server import GunicornServer, HttpResult, http, rss_kib

pytestmark = pytest.mark.slow  # real servers under load, faults, scenario runs

PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def order_service(tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("bake"), blueprint=str(EXAMPLES_DIR / "order_service.yaml"))


@pytest.fixture
def cluster():
    cluster = ThrowawayCluster()
    cluster.start()
    cluster.wait_ready()
    yield cluster
    cluster.destroy()


def worker_pids(master: int) -> set[int]:
    """The master's child processes, read from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.add(int(entry.name))
    return children


def wait_for(condition, timeout: float, step: float = 0.05) -> float:
    """Seconds until condition() held; fails the test past timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s")
        time.sleep(step)
    return time.monotonic() - started


def test_database_outage_and_recovery(order_service, tmp_path, cluster, measure):
    env = {"DATABASE_URL": cluster.url}
    with GunicornServer(order_service, tmp_path, env) as server:
        url = server.url
        for n in range(5):
            assert http("POST", f"{url}/orders", {"customer": f"before-{n}"}).status == 201
        # The first worker may answer before the master has forked the second.
        wait_for(lambda: len(worker_pids(server.process.pid)) == 2, timeout=15)
        workers = worker_pids(server.process.pid)

        cluster.stop("fast")
        took = wait_for(lambda: http("GET", f"{url}/ready").status == 503, timeout=2)
        ready = http("GET", f"{url}/ready")
        assert ready.json()["failed"] == ["orders"]
        assert http("GET", f"{url}/health").status == 200
        for method, body in (("GET", None), ("POST", {"customer": "during"})):
            answer = http(method, f"{url}/orders", body)
            assert answer.status == 503, answer.body
            assert answer.headers["Content-Type"] == PROBLEM_JSON
            assert b"Traceback" not in answer.body and b"psycopg2" not in answer.body

        cluster.start()
        recovered = wait_for(
            lambda: (
                http("GET", f"{url}/orders?limit=100").status == 200
                and http("GET", f"{url}/ready").status == 200
            ),
            timeout=5,
        )
        customers = [
            item["customer"] for item in http("GET", f"{url}/orders?limit=100").json()["items"]
        ]
        assert customers == [f"before-{n}" for n in range(5)]
        assert http("POST", f"{url}/orders", {"customer": "after"}).status == 201
        assert worker_pids(server.process.pid) == workers, "workers were restarted"
    measure(
        load="5 writes, then API calls during the outage",
        fault="PostgreSQL stopped (pg_ctl -m fast), then started",
        result=f"/ready 503 after {took:.2f}s (limit 2 s); API 503 problem+json; "
        f"recovered {recovered:.2f}s after restart (limit 5 s), same workers",
        acknowledged=5,
        found=len(customers),
        errors=0,
    )


def list_a_locked_table(server: GunicornServer, database_url: str) -> tuple[HttpResult, float]:
    """GET the orders list while another session holds an ACCESS EXCLUSIVE lock on the table:
    the answer, and the seconds it took."""
    blocker = psycopg2.connect(database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute('LOCK TABLE "orders" IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            answer = http("GET", f"{server.url}/orders")
            return answer, time.monotonic() - started
    finally:
        blocker.rollback()
        blocker.close()


def test_slow_statement_answers_504_within_the_timeout(order_service, tmp_path, cluster, measure):
    env = {"DATABASE_URL": cluster.url, "DB_STATEMENT_TIMEOUT_MS": "300"}
    because = "a short statement timeout, so that the test waits 0.3 s rather than 5 s"
    with GunicornServer(order_service, tmp_path, env, because=because) as server:
        assert http("GET", f"{server.url}/ready").status == 200
        answer, took = list_a_locked_table(server, cluster.url)
        assert answer.status == 504
        assert answer.headers["Content-Type"] == PROBLEM_JSON
        assert b"LOCK" not in answer.body and b"canceling" not in answer.body
        assert took < 5, f"the request held a worker for {took:.1f}s"
        assert http("GET", f"{server.url}/orders").status == 200
    measure(
        load="1 list request against a locked table",
        fault="ACCESS EXCLUSIVE lock held; DB_STATEMENT_TIMEOUT_MS=300",
        result=f"504 problem+json after {took:.2f}s; the next request 200",
        errors=0,
    )


def test_slow_statement_answers_504_at_the_shipped_timeout(order_service, tmp_path, cluster):
    """The same, at the statement timeout the project ships (config/system_config.yaml)."""
    config = yaml.safe_load((order_service / "config" / "system_config.yaml").read_text())
    timeout_s = config["database"]["statement_timeout_ms"] / 1000
    with GunicornServer(order_service, tmp_path, {"DATABASE_URL": cluster.url}) as server:
        assert http("GET", f"{server.url}/ready").status == 200  # the table exists
        answer, took = list_a_locked_table(server, cluster.url)
        assert answer.status == 504
        assert answer.headers["Content-Type"] == PROBLEM_JSON
        assert timeout_s <= took < timeout_s + 2, f"{took:.2f}s against {timeout_s}s"
        assert http("GET", f"{server.url}/orders").status == 200


def test_worker_crashes_lose_no_acknowledged_write(
    order_service, tmp_path, postgres_database, measure
):
    env = {"DATABASE_URL": postgres_database}
    clients, run_seconds, kill_every = 8, 10.0, 2.0
    acknowledged: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    with GunicornServer(order_service, tmp_path, env) as server:

        def writer() -> None:
            while not stop.is_set():
                name = f"write-{next(counter)}"
                try:
                    answer = http("POST", f"{server.url}/orders", {"customer": name}, timeout=10)
                except (OSError, HTTPException) as error:  # died with its worker
                    with lock:
                        failures.append(f"{name}: {type(error).__name__}")
                    continue
                with lock:
                    if answer.status == 201:
                        acknowledged.append(name)
                    else:
                        failures.append(f"{name}: HTTP {answer.status}")

        threads = [threading.Thread(target=writer, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        kills = 0
        deadline = time.monotonic() + run_seconds
        while time.monotonic() < deadline:
            time.sleep(kill_every)
            victims = sorted(worker_pids(server.process.pid))
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                kills += 1
        stop.set()
        for thread in threads:
            thread.join(15)
        wait_for(lambda: len(worker_pids(server.process.pid)) == 2, timeout=15)
        assert http("GET", f"{server.url}/ready").status == 200

    with psycopg2.connect(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute('SELECT customer, count(*) FROM "orders" GROUP BY customer')
        stored = dict(cursor.fetchall())
    connection.close()
    lost = [name for name in acknowledged if name not in stored]
    duplicated = [name for name, count in stored.items() if count > 1]
    assert kills >= 4
    assert len(acknowledged) > 100
    assert lost == [] and duplicated == []
    assert all("HTTP" not in failure for failure in failures), failures[:5]
    assert len(failures) <= kills * clients, failures[:5]
    measure(
        load=f"{clients} writers, POST for {run_seconds:.0f} s",
        fault=f"SIGKILL of a worker every {kill_every:.0f} s ({kills} kills)",
        result=f"master replaced every worker; {len(failures)} requests cut by the kills "
        "(connection errors, no HTTP error)",
        sent=len(acknowledged) + len(failures),
        errors=len(failures),
        acknowledged=len(acknowledged),
        found=sum(1 for name in acknowledged if stored.get(name) == 1),
    )


def test_four_instances_start_at_once_on_an_empty_database(
    order_service, tmp_path, cluster, measure
):
    servers = [
        GunicornServer(order_service, tmp_path / f"instance-{n}", {"DATABASE_URL": cluster.url})
        for n in range(4)
    ]
    errors: list[BaseException] = []

    def start(server: GunicornServer) -> None:
        try:
            server.start()
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        readiness = [http("GET", f"{server.url}/ready").status for server in servers]
        assert readiness == [200, 200, 200, 200]
        for n, server in enumerate(servers):
            assert http("POST", f"{server.url}/orders", {"customer": f"via-{n}"}).status == 201
    finally:
        for server in servers:
            server.stop()
    with psycopg2.connect(cluster.url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname = 'orders' AND relkind = 'r'")
        assert cursor.fetchone()[0] == 1
        cursor.execute('SELECT count(*) FROM "orders"')
        assert cursor.fetchone()[0] == 4
    connection.close()
    measure(
        load="4 Gunicorn instances started at once, 1 write each",
        fault="empty database, concurrent schema bootstrap",
        result="all 4 ready; the orders table created once",
        acknowledged=4,
        found=4,
        errors=0,
    )


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk drives the soak (apt-get install wrk)")
def test_soak_keeps_memory_flat(order_service, tmp_path, postgres_database, measure):
    """60 s at 64 connections: no error, and worker memory grows less than 10 %."""
    env = {"DATABASE_URL": postgres_database}  # workers are never recycled by default
    with GunicornServer(order_service, tmp_path, env) as server:
        created = http("POST", f"{server.url}/orders", {"customer": "soak"}).json()
        target = f"{server.url}/orders/{created['id']}"
        warm = subprocess.run(
            ["wrk", "-t2", "-c64", "-d5s", target], capture_output=True, text=True, timeout=60
        )
        assert warm.returncode == 0
        workers = sorted(worker_pids(server.process.pid))
        before = {pid: rss_kib(pid) for pid in workers}
        soak = subprocess.run(
            ["wrk", "-t2", "-c64", "-d60s", "--timeout", "10s", target],
            capture_output=True,
            text=True,
            timeout=120,
        )
        after = {pid: rss_kib(pid) for pid in workers}
        assert sorted(worker_pids(server.process.pid)) == workers, "a worker was replaced"
    assert soak.returncode == 0, soak.stderr
    assert "Non-2xx" not in soak.stdout and "Socket errors" not in soak.stdout, soak.stdout
    requests = int(re.search(r"(\d+) requests in", soak.stdout).group(1))
    growth = {pid: after[pid] / before[pid] - 1 for pid in workers}
    assert requests > 10_000
    assert max(growth.values()) < 0.10, growth
    measure(
        load="wrk, 64 connections, 60 s, GET by id",
        fault="none (soak)",
        result="worker RSS growth "
        + ", ".join(f"{100 * value:+.2f} %" for value in growth.values())
        + " (limit +10 %)",
        sent=requests,
        errors=0,
    )


def test_sigterm_under_load_answers_what_it_received(
    order_service, tmp_path, postgres_database, measure
):
    from service_validator.dynamic_checks import graceful_shutdown

    env = {"DATABASE_URL": postgres_database, "GUNICORN_GRACEFUL_TIMEOUT": "10"}
    # The shipped 30 s is tested by autocoder-validate's graceful-shutdown check (test_validator).
    because = "a 10 s graceful timeout bounds the test's wait (the default is 30 s)"
    server = GunicornServer(order_service, tmp_path, env, because=because).start()
    try:
        outcome = graceful_shutdown(server, graceful_timeout=10)
    finally:
        server.stop()
    numbers = outcome.measurements
    assert numbers["exit_code"] == 0 and numbers["lost_after_received"] == 0
    assert numbers["non_200"] == 0 and numbers["answered"] > 100
    measure(
        load="16 clients, GET /ready in a loop",
        fault="SIGTERM to the Gunicorn master",
        result=f"exit 0 in {numbers['exit_seconds']} s (limit 10 s); "
        f"{numbers['reset_in_listen_queue']} reset in the listen queue before reaching the app",
        sent=numbers["answered"] + numbers["lost_after_received"],
        errors=numbers["lost_after_received"] + numbers["non_200"],
    )
