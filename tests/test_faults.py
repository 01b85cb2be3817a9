"""Faults under real Gunicorn and PostgreSQL: database outage, frozen and unreachable database,
slow statements, slow clients, a full disk, worker crashes."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import network
import psycopg2
import pytest
import yaml
from conftest import EXAMPLES_DIR, ONE_THREAD_BECAUSE, WORKER_MODELS, bake, cannot_run_here
from pg_cluster import ThrowawayCluster

from service_validator.server import GunicornServer, HttpResult, child_pids, http, rss_kib

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
    """The master's child processes."""
    return set(child_pids(master))


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
        outcome = graceful_shutdown(server, graceful_timeout=10, drain_seconds=5)
    finally:
        server.stop()
    numbers = outcome.measurements
    assert numbers["exit_code"] == 0 and numbers["lost_after_received"] == 0
    assert numbers["non_200"] == 0 and numbers["answered"] > 100
    assert numbers["not_ready_after_seconds"] < 1 and numbers["exit_seconds"] >= 5
    measure(
        load="16 clients, GET /health in a loop, /ready polled",
        fault="SIGTERM to the Gunicorn master",
        result=f"/ready 503 after {numbers['not_ready_after_seconds']} s, requests served "
        f"through the 5 s drain (DRAIN_SECONDS); exit 0 in {numbers['exit_seconds']} s "
        f"(limit 5 + 10 s); {numbers['reset_in_listen_queue']} reset in the listen queue "
        "before reaching the app (a balancer has stopped routing by then)",
        sent=numbers["answered"] + numbers["lost_after_received"],
        errors=numbers["lost_after_received"] + numbers["non_200"],
    )


# Bounded failures: a database that stops answering, slow clients, a full or read-only disk.
# Each runs the service at its shipped defaults: REQUEST_TIMEOUT_MS=10000, READY_TIMEOUT_MS=500,
# GUNICORN_REQUEST_READ_TIMEOUT=10.
REQUEST_TIMEOUT_S = 10.0
PROBE_LIMIT_S = 1.0  # what an orchestrator's probe may take, at most
CLIENT_TIMEOUT_S = 60.0  # far above every bound, so that the service's own bounds are seen


@dataclass
class Answer:
    """One request as a client saw it: when, how long, and the status (None: no answer)."""

    kind: str
    started: float
    seconds: float
    status: int | None
    content_type: str = ""
    body: object = None
    key: str | None = None
    sent: dict | None = None
    error: str = ""


def ask(
    kind: str, method: str, url: str, body=None, headers=None, timeout=CLIENT_TIMEOUT_S
) -> Answer:
    started = time.monotonic()
    try:
        result = http(method, url, body, headers=headers, timeout=timeout)
    except (OSError, HTTPException) as error:
        return Answer(kind, started, time.monotonic() - started, None, error=repr(error))
    try:
        parsed = result.json()
    except ValueError:
        parsed = None
    content_type = result.headers.get("Content-Type", "")
    return Answer(kind, started, time.monotonic() - started, result.status, content_type, parsed)


class ThreadGroup:
    """Threads started on entering the block, told to stop and joined on leaving it."""

    _threads: list[threading.Thread]
    _stop: threading.Event

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 5)


class Traffic(ThreadGroup):
    """Clients writing (POST with an Idempotency-Key) and reading in a loop, and a prober
    asking /health and /ready every 0.25 s; every answer is recorded."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]
        self._threads.append(threading.Thread(target=self._prober, daemon=True))

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _client(self, number: int) -> None:
        for n in range(10**6):
            if self._stop.is_set():
                return
            key = f"client-{number}-{n}-{uuid.uuid4().hex}"
            sent = {"customer": f"customer {number}-{n}"}
            answer = ask("write", "POST", f"{self.url}/orders", sent, {"Idempotency-Key": key})
            answer.key, answer.sent = key, sent
            self._record(answer)
            self._record(ask("read", "GET", f"{self.url}/orders?limit=5"))

    def _prober(self) -> None:
        while not self._stop.wait(0.25):
            for probe in ("health", "ready"):
                self._record(ask(probe, "GET", f"{self.url}/{probe}", timeout=5))

    def of(self, *kinds: str, since: float = 0.0, until: float = math.inf) -> list[Answer]:
        return [a for a in self.answers if a.kind in kinds and since <= a.started <= until]


def settle_writes(url: str, database_url: str, answers: list[Answer]) -> dict:
    """Retry every write that got no 201, with its key and body, as the README tells clients;
    then read the table and check each key made exactly one record with the body sent.
    Returns the figures."""
    retried = [a for a in answers if a.status != 201]
    replayed = 0
    for answer in retried:
        again = http("POST", f"{url}/orders", answer.sent, headers={"Idempotency-Key": answer.key})
        assert again.status == 201, (answer, again.body)
        replayed += again.headers.get("Idempotent-Replayed") == "true"
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute('SELECT idempotency_key, customer FROM "orders"')
        rows = cursor.fetchall()
    connection.close()
    stored = Counter(key for key, _ in rows)
    customers = {key: customer for key, customer in rows}
    for answer in answers:
        assert stored[answer.key] == 1, f"{answer.key}: {stored[answer.key]} records"
        assert customers[answer.key] == answer.sent["customer"]
    acknowledged = [a for a in answers if a.status == 201]
    return {
        "acknowledged": len(acknowledged),
        "found": sum(1 for a in acknowledged if stored[a.key] == 1),
        "retried": len(retried),
        "replayed": replayed,
    }


def check_bounded(traffic: Traffic, fault_start: float, fault_end: float) -> dict:
    """What must hold while the database does not answer, and the figures measured."""
    requests = traffic.of("write", "read")
    assert [a for a in requests if a.status is None] == [], "a request got no answer"
    longest = max(a.seconds for a in requests)
    too_long = [
        (a.kind, f"began {a.started - fault_start:.2f} s into the fault", f"{a.seconds:.2f} s")
        for a in requests
        if a.seconds > REQUEST_TIMEOUT_S + 1.5
    ]
    assert too_long == [], f"longest request {longest:.2f} s"
    for answer in requests:
        assert answer.status in (200, 201, 503, 504), answer
        if answer.status >= 500:
            assert answer.content_type == PROBLEM_JSON, answer
    # Probes that began and ended while the fault lasted (each takes under a second).
    during = {"since": fault_start + 0.5, "until": fault_end - PROBE_LIMIT_S}
    health = traffic.of("health", **during)
    ready = traffic.of("ready", **during)
    assert health and ready
    assert all(a.status == 200 for a in health), [a for a in health if a.status != 200][:3]
    assert all(a.status == 503 for a in ready), [a for a in ready if a.status != 503][:3]
    assert ready[-1].body["failed"] == ["orders"]
    assert ready[-1].body["checks"]["orders"] == "unavailable: no answer within 500 ms"
    slowest_health = max(a.seconds for a in health)
    slowest_ready = max(a.seconds for a in ready)
    assert slowest_health < PROBE_LIMIT_S and slowest_ready < PROBE_LIMIT_S
    return {
        "longest": longest,
        "health": slowest_health,
        "ready": slowest_ready,
        "answered_5xx": sum(1 for a in requests if a.status >= 500),
        "sent": len(requests),
    }


def recovery_seconds(url: str, since: float) -> float:
    """Seconds from `since` until /ready is 200 and a write succeeds again."""
    wait_for(
        lambda: (
            http("GET", f"{url}/ready", timeout=5).status == 200
            and http("POST", f"{url}/orders", {"customer": "after the fault"}).status == 201
        ),
        timeout=30,
        step=0.1,
    )
    return time.monotonic() - since


def database_stops_answering(
    order_service: Path,
    tmp_path: Path,
    database_url: str,
    fault: str,
    start,
    end,
    settings: dict[str, str] | None = None,
) -> dict:
    """Run 8 clients and the prober against the service, call start() and, 20 s later, end()
    (a database that stops answering, then answers again); check every bound and every
    write. Returns the figures, also recorded as the reliability table's row."""
    fault_s = 2 * REQUEST_TIMEOUT_S
    env = {"DATABASE_URL": database_url, **(settings or {})}
    because = ONE_THREAD_BECAUSE if settings else None
    with GunicornServer(order_service, tmp_path, env, because=because) as server:
        wait_for(lambda: len(worker_pids(server.process.pid)) == 2, timeout=15)
        workers = worker_pids(server.process.pid)
        with Traffic(server.url) as traffic:
            time.sleep(2)
            began = time.monotonic()
            start()
            try:
                time.sleep(fault_s)
            finally:
                end()
            ended = time.monotonic()
            recovered = recovery_seconds(server.url, ended)
            time.sleep(1)
        figures = check_bounded(traffic, began, ended)
        writes = settle_writes(server.url, database_url, traffic.of("write"))
        assert worker_pids(server.process.pid) == workers, "a worker was killed"
    assert recovered < 5
    return {
        "load": "8 clients (POST with Idempotency-Key, GET), probes every 0.25 s"
        + "".join(f"; {name}={value}" for name, value in (settings or {}).items()),
        "fault": f"{fault} for {fault_s:.0f} s",
        "result": f"longest request {figures['longest']:.2f} s (deadline "
        f"{REQUEST_TIMEOUT_S:.0f} s); /health at most {figures['health']:.2f} s, /ready 503 at "
        f"most {figures['ready']:.2f} s; recovered {recovered:.2f} s after the fault; "
        f"{writes['retried']} writes retried with their key, {writes['replayed']} found "
        "already applied",
        "sent": figures["sent"],
        "errors": figures["answered_5xx"],
        "acknowledged": writes["acknowledged"],
        "found": writes["found"],
    }


@pytest.mark.parametrize("settings", WORKER_MODELS)
def test_frozen_database_bounds_every_request(order_service, tmp_path, cluster, measure, settings):
    """SIGSTOP of every PostgreSQL process (a stalled volume or host): the kernel still
    accepts connections and data, nothing answers."""
    figures = database_stops_answering(
        order_service,
        tmp_path,
        cluster.url,
        "PostgreSQL frozen (SIGSTOP of every process)",
        start=cluster.freeze,  # the backends serving the service too: listed as it freezes
        end=cluster.thaw,
        settings=settings,
    )
    measure(**figures)


@pytest.fixture
def remote_cluster():
    reason = network.unavailable_reason()
    if reason:
        cannot_run_here(reason)
    host = network.RemoteHost().create()
    try:
        cluster = ThrowawayCluster(host=host.address, netns=host.name)
        try:
            cluster.start()
            cluster.wait_ready()
            yield host, cluster
        finally:
            cluster.destroy()
    finally:
        host.destroy()


def test_dropped_packets_bound_every_request(order_service, tmp_path, remote_cluster, measure):
    """PostgreSQL on another host (a network namespace) whose packets are all dropped: a
    network partition, where not even the kernel answers."""
    host, cluster = remote_cluster
    figures = database_stops_answering(
        order_service,
        tmp_path,
        cluster.url,
        "every packet to and from PostgreSQL's host dropped (nftables)",
        start=host.drop_all_packets,
        end=host.deliver_packets,
    )
    measure(**figures)


class Slowloris(ThreadGroup):
    """Connections that send a request a little at a time: 30 send one header line every
    5 s, 10 send their headers, then one byte of a 1,000-byte body every 2 s. A connection
    the service closes is opened again. Counts the 408 answers received."""

    def __init__(self, port: int, connections: int = 40) -> None:
        self.port = port
        self.timeouts = 0
        self.opened = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._trickle, args=(n % 4 == 3,), daemon=True)
            for n in range(connections)
        ]

    def _trickle(self, with_body: bool) -> None:
        while not self._stop.is_set():
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as connection:
                with self._lock:
                    self.opened += 1
                try:
                    if with_body:
                        connection.sendall(
                            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            b"\r\nContent-Length: 1000\r\n\r\n"
                        )
                        piece, pause = b"{", 2.0
                    else:
                        connection.sendall(b"GET /orders HTTP/1.1\r\nHost: x\r\n")
                        piece, pause = b"X-Slow: 1\r\n", 5.0
                    while not self._stop.wait(pause):
                        connection.sendall(piece)
                except OSError:  # closed by the service
                    pass
                try:
                    answer = connection.recv(200)
                except OSError:
                    answer = b""
                if answer.startswith(b"HTTP/1.1 408"):
                    with self._lock:
                        self.timeouts += 1


@pytest.mark.parametrize("settings", WORKER_MODELS)
def test_slow_clients_do_not_starve_the_service(order_service, tmp_path, measure, settings):
    """40 slowloris connections straight against the service (no proxy), at its shipped
    defaults and with one thread: probes and API requests are still answered within a
    second."""
    run_s = 3 * REQUEST_TIMEOUT_S
    because = ONE_THREAD_BECAUSE if settings else None
    with GunicornServer(order_service, tmp_path, settings, because=because) as server:
        with Slowloris(server.port) as slowloris:
            time.sleep(1)
            answers = []
            stop_at = time.monotonic() + run_s
            for n in range(10**6):
                if time.monotonic() > stop_at:
                    break
                answers.append(ask("health", "GET", f"{server.url}/health", timeout=5))
                answers.append(ask("ready", "GET", f"{server.url}/ready", timeout=5))
                answers.append(ask("read", "GET", f"{server.url}/orders?limit=5", timeout=5))
                body = {"customer": f"during slowloris {n}"}
                answers.append(ask("write", "POST", f"{server.url}/orders", body, timeout=5))
                time.sleep(0.25)
        assert [a for a in answers if a.status not in (200, 201)] == []
        slowest = {
            kind: max(a.seconds for a in answers if a.kind == kind)
            for kind in ("health", "ready", "read", "write")
        }
        assert max(slowest.values()) < PROBE_LIMIT_S, slowest
        # Each connection was cut at its read deadline (10 s) with 408, then opened again.
        assert slowloris.timeouts >= 40, slowloris.timeouts
    measure(
        load=f"40 slowloris connections for {run_s:.0f} s; a client asking /health, /ready, "
        "GET and POST every 0.25 s"
        + "".join(f"; {name}={value}" for name, value in settings.items()),
        fault="slow clients (30 send a header line every 5 s, 10 a body byte every 2 s), "
        "no proxy in front",
        result="slowest answer: "
        + ", ".join(f"{kind} {seconds:.3f} s" for kind, seconds in slowest.items())
        + f" (limit 1 s); {slowloris.timeouts} slow connections answered 408 at the read "
        f"deadline of {REQUEST_TIMEOUT_S:.0f} s",
        sent=len(answers),
        errors=0,
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that fills up."""
    if os.geteuid() != 0:
        cannot_run_here("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True, timeout=30
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], timeout=30)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; return it."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        for _ in range(10**5):
            try:
                handle.write(block)
            except OSError:
                break
        while True:  # the last few bytes
            try:
                handle.write(b"\0")
            except OSError:
                break
    return filler


def test_full_disk_makes_the_store_not_ready(order_service, tmp_path, small_disk, measure):
    env = {"DATA_DIR": str(small_disk)}
    ready_url = "/ready"
    with GunicornServer(order_service, tmp_path, env) as server:
        url = server.url
        sent = [{"customer": f"before {n}", "total": n + 0.5} for n in range(20)]
        stored = [http("POST", f"{url}/orders", body) for body in sent]
        assert all(answer.status == 201 for answer in stored)

        filler = fill(small_disk)
        full = ask("ready", "GET", f"{url}{ready_url}")
        assert full.status == 503 and full.seconds < PROBE_LIMIT_S, full
        assert full.body["failed"] == ["orders"]
        assert full.body["checks"]["orders"].startswith("cannot write: disk full"), full.body
        write = ask("write", "POST", f"{url}/orders", {"customer": "on a full disk"})
        assert write.status == 503 and write.content_type == PROBLEM_JSON, write
        assert http("GET", f"{url}/orders/1").status == 200  # reads go on

        filler.unlink()
        freed = time.monotonic()
        recovered = recovery_seconds(url, freed)

        listed = http("GET", f"{url}/orders?limit=100").json()["items"]
        kept = {record["customer"]: record["total"] for record in listed}
        for body in sent:
            assert kept[body["customer"]] == body["total"], body
        assert "on a full disk" not in kept
    measure(
        load="20 writes, then probes, reads and writes on a full disk",
        fault="SQLite data directory on a 4 MiB tmpfs, filled up",
        result=f"/ready 503 in {full.seconds:.3f} s naming orders ({full.body['checks']['orders']}"
        f"); writes 503 problem+json, reads 200; ready and writing {recovered:.2f} s after space "
        "was freed",
        acknowledged=len(sent),
        found=sum(1 for body in sent if kept.get(body["customer"]) == body["total"]),
        errors=0,
    )


def test_read_only_database_makes_the_store_not_ready(order_service, tmp_path, cluster, measure):
    """PostgreSQL turned read-only (default_transaction_read_only, as on a standby or a
    database put in maintenance), then writable again."""

    def set_read_only(value: str) -> None:
        """Reload the setting, then end the service's sessions: every connection it opens
        next starts with the new value (a reload reaches running sessions asynchronously)."""
        admin = psycopg2.connect(cluster.url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
            cursor.execute("SELECT pg_reload_conf()")
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (order_service.name,),
            )
        admin.close()

    with GunicornServer(order_service, tmp_path, {"DATABASE_URL": cluster.url}) as server:
        url = server.url
        sent = [{"customer": f"before {n}"} for n in range(10)]
        assert all(http("POST", f"{url}/orders", body).status == 201 for body in sent)
        set_read_only("on")
        refused = {"orders": "cannot write: read-only database"}
        wait_for(lambda: http("GET", f"{url}/ready").json()["checks"] == refused, timeout=5)
        read_only = ask("ready", "GET", f"{url}/ready")
        assert read_only.seconds < PROBE_LIMIT_S
        assert read_only.status == 503 and read_only.body["checks"] == refused
        write = ask("write", "POST", f"{url}/orders", {"customer": "while read-only"})
        assert write.status == 503 and write.content_type == PROBLEM_JSON, write
        listed = http("GET", f"{url}/orders?limit=100")
        assert listed.status == 200, listed.body
        set_read_only("off")
        recovered = recovery_seconds(url, time.monotonic())
        customers = [r["customer"] for r in http("GET", f"{url}/orders?limit=100").json()["items"]]
        assert customers == [body["customer"] for body in sent] + ["after the fault"]
    measure(
        load="10 writes, then probes, reads and writes",
        fault="PostgreSQL made read-only (default_transaction_read_only = on), then writable",
        result=f"/ready 503 in {read_only.seconds:.3f} s naming orders (cannot write: read-only "
        f"database); writes 503 problem+json, reads 200; ready and writing {recovered:.2f} s "
        "after the database was writable again",
        acknowledged=len(sent),
        found=sum(1 for body in sent if body["customer"] in customers),
        errors=0,
    )


def test_write_cut_by_a_frozen_database_is_retried_once(order_service, tmp_path, cluster, measure):
    """The case an Idempotency-Key exists for: the INSERT reached PostgreSQL, which froze
    before confirming it. The client gets 504 (outcome unknown); the database applies the
    INSERT when it resumes; the client's retry with the same key finds that record."""
    env = {"DATABASE_URL": cluster.url, "WEB_CONCURRENCY": "1"}  # one pool: a warm connection
    with GunicornServer(order_service, tmp_path, env) as server:
        url = server.url
        assert http("POST", f"{url}/orders", {"customer": "warm-up"}).status == 201
        body, key = {"customer": "sent once"}, {"Idempotency-Key": uuid.uuid4().hex}
        cluster.freeze()
        try:
            cut = ask("write", "POST", f"{url}/orders", body, key)
        finally:
            cluster.thaw()
        assert cut.status == 504 and cut.content_type == PROBLEM_JSON, cut
        assert "may have been applied" in cut.body["detail"]
        assert REQUEST_TIMEOUT_S - 0.5 < cut.seconds < REQUEST_TIMEOUT_S + 1.5
        retry = http("POST", f"{url}/orders", body, headers=key)
        assert retry.status == 201 and retry.headers["Idempotent-Replayed"] == "true"
        with psycopg2.connect(cluster.url) as connection, connection.cursor() as cursor:
            cursor.execute(
                'SELECT customer FROM "orders" WHERE idempotency_key = %s',
                (key["Idempotency-Key"],),
            )
            rows = cursor.fetchall()
        connection.close()
        assert rows == [("sent once",)]
    measure(
        load="one POST with an Idempotency-Key on a warm connection",
        fault="PostgreSQL frozen (SIGSTOP) after receiving the INSERT, then resumed",
        result=f"504 problem+json (may have been applied) after {cut.seconds:.2f} s; the retry "
        "with the same key answered 201 with Idempotent-Replayed: true; 1 record",
        acknowledged=1,
        found=len(rows),
        errors=0,
    )
