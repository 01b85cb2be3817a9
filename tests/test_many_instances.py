"""Three instances of the generated service, each its own Gunicorn master on its own loopback
port, behind haproxy (health-checking /ready), on one PostgreSQL, under mixed read and write
load through the balancer: a rolling restart, an instance SIGKILLed, a blueprint change rolled
out while the load runs, and a real Prometheus scraping all three."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import cannot_run_here
from test_migrations import migrate
from test_regeneration import changed_blueprint, regenerate

from service_validator.server import GunicornServer, free_port, http

pytestmark = pytest.mark.slow

# The README's way to run many instances: one `python -m app.migrate` before a rollout, and
# instances that do not migrate on their own.
MANY_INSTANCES = "MIGRATE_ON_START=false: many instances migrate once, before a rollout"
CLIENTS = 4
INTERVAL_MS = 500  # haproxy's health check of each instance; 2 failures take it out


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        cannot_run_here(f"{name} is not installed (Debian package: .ci/run installs it)")
    return found  # type: ignore[return-value]


class Balancer:
    """haproxy in front of the instances: round robin, /ready checked every INTERVAL_MS, a
    request retried on another instance when its connection failed before an answer."""

    def __init__(self, work: Path, ports: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket_path = work / "haproxy.sock"
        servers = "\n".join(
            f"    server i{index} 127.0.0.1:{port} check" for index, port in enumerate(ports)
        )
        self.config = work / "haproxy.cfg"
        self.config.write_text(
            f"""global
    maxconn 2000
    stats socket {self.socket_path} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    retry-on conn-failure empty-response
frontend api
    bind 127.0.0.1:{self.port}
    default_backend instances
backend instances
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter {INTERVAL_MS}ms fall 2 rise 2
{servers}
"""
        )
        self.log = (work / "haproxy.log").open("wb")
        self.process = subprocess.Popen(
            [tool("haproxy"), "-f", str(self.config), "-db"], stdout=self.log, stderr=self.log
        )

    def states(self) -> dict[str, str]:
        """{server: UP, DOWN, ...} as haproxy sees them now."""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(5)
            connection.connect(str(self.socket_path))
            connection.sendall(b"show stat\n")
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
        header, *rows = data.decode().splitlines()
        columns = header.lstrip("# ").split(",")
        found = {}
        for row in rows:
            values = dict(zip(columns, row.split(","), strict=False))
            if values.get("pxname") == "instances" and values["svname"].startswith("i"):
                found[values["svname"]] = values["status"].split()[0]
        return found

    def wait_for(self, wanted: dict[str, str], limit_s: float = 30) -> None:
        deadline = time.monotonic() + limit_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                states = self.states()
            except OSError:
                states = {}
            if all(states.get(name) == state for name, state in wanted.items()):
                return
            time.sleep(0.1)
        raise AssertionError(f"haproxy: {states}, not {wanted}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


@dataclass
class Load:
    """Clients through the balancer: each writes (POST with an Idempotency-Key) and reads
    (GET of a record written), one request at a time, and records what came back."""

    url: str
    acknowledged: dict[str, int] = field(default_factory=dict)  # key: id
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, number: int) -> None:
        chooser = random.Random(number)
        for count in range(100_000):
            if self._stop.is_set():
                return
            if count % 2 == 0 or not self.acknowledged:
                key = f"client{number}-{count}"
                body = {
                    "customer": f"client {number}",
                    "total": count + 0.5,
                    "email": f"{key}@example.org",
                }
                outcome = self._send("POST", "/orders", body, {"Idempotency-Key": key})
                if outcome is not None and outcome.status == 201:
                    with self._lock:
                        self.acknowledged[key] = outcome.json()["id"]
            else:
                record_id = chooser.choice(list(self.acknowledged.values()))
                self._send("GET", f"/orders/{record_id}", None, {})
            time.sleep(0.01)

    def _send(self, method: str, path: str, body: object, headers: dict):
        with self._lock:
            self.sent += 1
        try:
            answer = http(method, f"{self.url}{path}", body, headers=headers, timeout=15)
        except OSError as error:
            with self._lock:
                self.failures.append(f"{method} {path}: {error!r}")
            return None
        if answer.status >= 400:
            with self._lock:
                self.failures.append(f"{method} {path}: {answer.status} {answer.body[:200]!r}")
        return answer

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def run_for(self, seconds: float) -> None:
        time.sleep(seconds)


class Instances:
    """The instances, each restarted on its own port with the same settings."""

    def __init__(self, project: Path, work: Path, database_url: str, count: int = 3) -> None:
        self.project, self.work = project, work
        self.env = {"DATABASE_URL": database_url, "MIGRATE_ON_START": "false"}
        self.ports = [free_port() for _ in range(count)]
        self.servers: list[GunicornServer | None] = [None] * count

    def start(self, index: int) -> GunicornServer:
        server = GunicornServer(
            self.project,
            self.work / f"instance{index}",
            self.env,
            because=MANY_INSTANCES,
            port=self.ports[index],
        )
        self.servers[index] = server.start()
        return server

    def sigterm(self, index: int) -> float:
        """SIGTERM, as an orchestrator stops an instance; seconds until it exited."""
        server = self.servers[index]
        assert server is not None and server.process is not None
        began = time.monotonic()
        server.terminate()
        server.process.wait(60)
        return time.monotonic() - began

    def sigkill(self, index: int) -> None:
        """SIGKILL of the master and its workers, as a node or container dies."""
        server = self.servers[index]
        assert server is not None and server.process is not None
        master = server.process.pid
        workers = [
            int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == master
        ]
        for pid in [master, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.process.wait(10)

    def stop(self) -> None:
        for server in self.servers:
            if server is not None:
                server.stop()


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def stored(database_url: str) -> dict[str, list[int]]:
    """{Idempotency-Key: ids of the rows it made} of every row written through the API."""
    import psycopg2

    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT idempotency_key, id FROM orders WHERE idempotency_key IS NOT NULL")
        found: dict[str, list[int]] = {}
        for key, record_id in cursor.fetchall():
            found.setdefault(key, []).append(record_id)
    connection.close()
    return found


THROUGH_THE_BALANCER = (
    f"{CLIENTS} clients through haproxy (POST with Idempotency-Key, GET), 3 instances, "
    "one PostgreSQL"
)


def figures(load: Load, database_url: str) -> dict[str, object]:
    """Requests sent and failed, and the acknowledged writes found in the database: each
    stored once, under the id its client was given (asserted)."""
    rows = stored(database_url)
    found = [key for key, record_id in load.acknowledged.items() if rows.get(key) == [record_id]]
    duplicated = [key for key, ids in rows.items() if len(ids) > 1]
    assert len(found) == len(load.acknowledged) and not duplicated, duplicated[:5]
    return {
        "load": THROUGH_THE_BALANCER,
        "sent": load.sent,
        "errors": len(load.failures),
        "acknowledged": len(load.acknowledged),
        "found": len(found),
    }


@pytest.fixture
def fleet(shop, tmp_path, postgres_database):
    """The example service migrated once, three instances of it, and haproxy in front."""
    project, blueprint = shop
    tool("haproxy")
    assert migrate(project, {"DATABASE_URL": postgres_database}).returncode == 0
    instances = Instances(project, tmp_path / "instances", postgres_database)
    balancer = None
    try:
        for index in range(len(instances.ports)):
            instances.start(index)
        balancer = Balancer(tmp_path, instances.ports)
        balancer.wait_for({f"i{n}": "UP" for n in range(len(instances.ports))})
        yield project, blueprint, instances, balancer
    finally:
        if balancer is not None:
            balancer.stop()
        instances.stop()


def all_up(instances: Instances) -> dict[str, str]:
    return {f"i{n}": "UP" for n in range(len(instances.ports))}


def rolling_restart(instances: Instances, balancer: Balancer) -> list[float]:
    """Each instance in turn: SIGTERM, started again, back in the balancer."""
    stopped_in = []
    for index in range(len(instances.ports)):
        stopped_in.append(round(instances.sigterm(index), 1))
        instances.start(index)
        balancer.wait_for(all_up(instances))
    return stopped_in


def test_a_rolling_restart_under_load_fails_no_request(fleet, postgres_database, measure):
    _, _, instances, balancer = fleet
    with Load(balancer.url) as load:
        load.run_for(2)
        stopped_in = rolling_restart(instances, balancer)
        load.run_for(2)
    measured = figures(load, postgres_database)
    measured["fault"] = "rolling restart: SIGTERM to each instance in turn, started again"
    measured["result"] = (
        f"{len(load.failures)} failed; each instance stopped in {stopped_in} s (DRAIN_SECONDS "
        "5, then the graceful stop); 0 duplicated writes"
    )
    print(measured)
    measure(**measured)
    assert not load.failures, load.failures[:10]
    assert load.sent > 200 and len(load.acknowledged) > 100


def test_an_instance_killed_loses_no_acknowledged_write(fleet, postgres_database, measure):
    _, _, instances, balancer = fleet
    with Load(balancer.url) as load:
        load.run_for(2)
        instances.sigkill(1)
        balancer.wait_for({"i1": "DOWN"})
        load.run_for(2)
        instances.start(1)
        balancer.wait_for(all_up(instances))
        load.run_for(1)
    measured = figures(load, postgres_database)
    measured["fault"] = "SIGKILL of one instance (master and workers), then started again"
    measured["result"] = (
        f"{len(load.failures)} failed (at most the {CLIENTS} in flight); out of the balancer "
        "within 2 checks; 0 duplicated writes"
    )
    print(measured, load.failures)
    measure(**measured)
    # At most the requests in flight on the killed instance: one per client.
    assert len(load.failures) <= CLIENTS, load.failures


def test_a_blueprint_change_rolls_out_under_load(fleet, tmp_path, postgres_database, measure):
    """Expand first: the new field has a default, so the old code keeps writing while the
    database is ahead of it; the migration runs once, then the instances restart in turn."""
    project, blueprint, instances, balancer = fleet

    def with_notes(document: dict) -> None:
        document["components"][0]["config"]["fields"]["notes"] = {
            "type": "string",
            "default": "none yet",
        }

    changed = changed_blueprint(blueprint, tmp_path / "v2.yaml", with_notes)
    with Load(balancer.url) as load:
        load.run_for(2)
        assert regenerate(tmp_path, changed).returncode == 0
        applied = migrate(project, {"DATABASE_URL": postgres_database})
        assert applied.stdout.strip() == "applied 0002; the database is at revision 0002"
        load.run_for(1)  # the old code, on a database one revision ahead of it
        rolling_restart(instances, balancer)
        load.run_for(2)
    measured = figures(load, postgres_database)
    measured["fault"] = (
        "blueprint change (a field with a default): regenerated, python -m app.migrate once, "
        "then a rolling restart"
    )
    measured["result"] = (
        f"{len(load.failures)} failed; the old code served on the migrated database until "
        "restarted; 0 duplicated writes"
    )
    print(measured)
    measure(**measured)
    assert not load.failures, load.failures[:10]
    newest = max(load.acknowledged.values())
    assert http("GET", f"{balancer.url}/orders/{newest}").json()["notes"] == "none yet"


def test_prometheus_counts_every_request_sent_through_the_balancer(fleet, tmp_path, measure):
    _, _, instances, balancer = fleet
    promtool, prometheus = tool("promtool"), tool("prometheus")
    targets = [f"127.0.0.1:{port}" for port in instances.ports]
    for target in targets:
        text = http("GET", f"http://{target}/metrics").body
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: service, static_configs: [{{targets: {json.dumps(targets)}}}]}}\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query?query="
    # Requests the API served, across instances: probes (haproxy's /ready) left out.
    # (none yet: 0)
    served = (
        'sum(flask_http_request_duration_seconds_count{url_rule!~"/ready|/health"}) or vector(0)'
    )

    def scraped(query: str) -> list:
        answer = http("GET", api + urllib.parse.quote(query), timeout=5)
        return answer.json()["data"]["result"] if answer.status == 200 else []

    def settled_total(limit_s: float = 30) -> float:
        """The sum once every target is up and two scrapes apart agree."""
        deadline = time.monotonic() + limit_s
        previous = None
        while time.monotonic() < deadline:
            try:
                up = scraped("sum(up)")
                total = scraped(served)
            except OSError:
                up, total = [], []
            if up and float(up[0]["value"][1]) == len(targets) and total:
                value = float(total[0]["value"][1])
                if value == previous:
                    return value
                previous = value
            time.sleep(2.5)
        raise AssertionError("Prometheus did not settle on all targets")

    try:
        before = settled_total()
        sent = 0
        for number in range(150):  # through the balancer: spread over the instances
            body = {"customer": "p", "total": number, "email": f"p{number}@example.org"}
            assert http("POST", f"{balancer.url}/orders", body).status == 201
            assert http("GET", f"{balancer.url}/orders?customer=p").status == 200
            sent += 2
        after = settled_total()
    finally:
        server.terminate()
        server.wait(15)
        log.close()
    counted = after - before
    measured = {
        "load": f"{sent // 2} POST and {sent // 2} GET through haproxy, 3 instances",
        "fault": "none: Prometheus scraping the 3 instances every 1 s",
        "result": f"promtool check metrics passed on each /metrics; Prometheus counted "
        f"{counted:g} API requests of {sent} sent",
        "sent": sent,
        "errors": 0,
    }
    print(measured)
    measure(**measured)
    assert counted == sent
