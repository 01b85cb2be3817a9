"""The moving parts of a benchmark: Gunicorn servers, wrk runs, fresh databases, seeding."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service_validator.server import MIGRATIONS_RUNNING, child_pids, shell_environment

BENCH_DIR = Path(__file__).resolve().parent
WRK_DIR = BENCH_DIR / "wrk"
BIN_DIR = Path(sys.executable).parent
GUNICORN = str(BIN_DIR / "gunicorn")
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.005
BALANCED_SHARE = 0.75  # gthread runs: each worker holds >= 3/4 of an even share (12 of 32)

# Gunicorn settings allowed to differ between a generated service and its baseline: where it
# listens and runs from, which app, and the generated service's own features (JSON logger;
# Prometheus multiprocess clean-up when a worker exits, never per request; schema migrations
# started once per worker; its worker class,
# Gunicorn's gthread reading each request in full before a thread takes it).
SETTINGS_ALLOWED_TO_DIFFER = {
    "worker_class",
    "bind",
    "chdir",
    "config",
    "control_socket",
    "default_proc_name",
    "logger_class",
    "child_exit",
    # The generated service starts applying pending schema migrations when a worker is up.
    "post_worker_init",
    # The generated master drains on SIGTERM (app/lifecycle.py): nothing runs per request.
    "when_ready",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(
    port: int, method: str, path: str, body: object = None, timeout: float = 5.0
) -> tuple[int | None, bytes]:
    """One HTTP request on loopback; (None, b"") when there is no answer (yet)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        connection.close()


@dataclass
class ServerSpec:
    """How to run one service: its directory (holding gunicorn.conf.py) and WSGI app."""

    name: str
    directory: Path
    app: str
    env: dict[str, str]


class Server:
    """`gunicorn -c gunicorn.conf.py APP` on a free loopback port; stopped by its own PID."""

    def __init__(self, spec: ServerSpec, work_dir: Path) -> None:
        self.spec = spec
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def argv(self) -> list[str]:
        return [GUNICORN, "-c", "gunicorn.conf.py", self.spec.app]

    @property
    def env(self) -> dict[str, str]:
        """A shell's environment (as the tests and the validator start the service), the
        spec's settings, and a free loopback port."""
        return {**shell_environment(), **self.spec.env, "BIND": f"127.0.0.1:{self.port}"}

    def start(self) -> float:
        """Start; return the seconds from spawning Gunicorn to the first 200 on /health."""
        with (
            (self.work_dir / "stdout.log").open("ab") as stdout,
            (self.work_dir / "stderr.log").open("ab") as stderr,
        ):
            started = time.perf_counter()
            self.process = subprocess.Popen(
                self.argv, cwd=self.spec.directory, env=self.env, stdout=stdout, stderr=stderr
            )
        deadline = started + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name}: gunicorn exited {self.process.returncode}; "
                    f"see {self.work_dir / 'stderr.log'}"
                )
            status, _ = request(self.port, "GET", "/health", timeout=1.0)
            if status == 200:
                return time.perf_counter() - started
            time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise RuntimeError(f"{self.spec.name}: no 200 on /health within {START_TIMEOUT_S} s")

    def worker_pids(self) -> list[int]:
        """The PIDs of this server's workers (children of its master)."""
        return [] if self.process is None else child_pids(self.process.pid)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def resolved_gunicorn_settings(spec: ServerSpec, work_dir: Path) -> dict[str, str]:
    """Every Gunicorn setting as Gunicorn itself resolves it for this service (a subprocess)."""
    code = (
        "import json, sys\n"
        "from gunicorn.app.wsgiapp import WSGIApplication\n"
        "sys.argv = json.loads(sys.argv[1])\n"
        "cfg = WSGIApplication('%(prog)s [OPTIONS] [APP_MODULE]').cfg\n"
        "def show(value):\n"
        "    name = getattr(value, '__qualname__', None)\n"
        "    return f'{value.__module__}.{name}' if name and callable(value) else repr(value)\n"
        "print(json.dumps({k: show(s.get()) for k, s in cfg.settings.items()}))\n"
    )
    server = Server(spec, work_dir)
    argv = ["gunicorn", *server.argv[1:]]
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)],
        cwd=spec.directory,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def settings_differences(left: dict[str, str], right: dict[str, str]) -> dict[str, list[str]]:
    """{setting: [left value, right value]} for resolved settings that must match but do not."""
    return {
        name: [left.get(name, "-"), right.get(name, "-")]
        for name in sorted(set(left) | set(right))
        if name not in SETTINGS_ALLOWED_TO_DIFFER and left.get(name) != right.get(name)
    }


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int, children_too: bool = False, text: str | None = None) -> int:
    """utime + stime of a process (+ those of its reaped children), in clock ticks."""
    try:
        text = text or Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is the state (field 3)
    ticks = int(fields[11]) + int(fields[12])
    if children_too:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


class CpuMeter:
    """How much CPU other processes took during a measurement: the noise it ran in.

    Foreign CPU = the machine's busy user+system time minus that of the processes under test:
    the Gunicorn master (with its reaped, i.e. recycled, workers), its live workers, every
    PostgreSQL process, kernel threads (they write PostgreSQL's and SQLite's files), and wrk
    (this process's reaped children). In cores: 1.0 = one CPU.
    """

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        user, nice, system = values[:3]
        steal = values[7] if len(values) > 7 else 0
        return user + nice + system, steal

    def _ours(self) -> float:
        ticks = _cpu_ticks(self.master_pid, children_too=True)
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        try:
            ticks += sum(_cpu_ticks(int(pid)) for pid in children.read_text().split())
        except OSError:
            pass
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                parent = stat[stat.rindex(")") + 2 :].split()[1]
                if name == "postgres" or parent == "2":  # 2: kthreadd, parent of kernel threads
                    ticks += _cpu_ticks(int(entry.name), text=stat)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ticks + (usage.ru_utime + usage.ru_stime) * CLOCK_TICKS

    def start(self) -> None:
        self._started = time.perf_counter()
        self._machine_start, self._steal_start = self._machine()
        self._ours_start = self._ours()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._started
        machine, steal = self._machine()
        ours = self._ours()
        foreign = (machine - self._machine_start) - (ours - self._ours_start)
        return {
            "foreign_cpu": round(max(foreign, 0) / CLOCK_TICKS / wall, 3),
            "steal_cpu": round((steal - self._steal_start) / CLOCK_TICKS / wall, 3),
        }


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    raw: dict[str, Any]
    noise: dict[str, float]


def connections_per_worker(server: Server) -> list[int]:
    """Established client connections held by each worker of the server, ascending."""
    output = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{server.port} )"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    held = Counter(int(pid) for pid in re.findall(r"pid=(\d+)", output))
    return sorted(held.get(pid, 0) for pid in server.worker_pids())


def wrk(
    url: str,
    script: str,
    duration_s: float,
    *args: str,
    connections: int = 32,
    threads: int = 2,
    meter: CpuMeter | None = None,
    spread_over: Server | None = None,
    attempts: int = 30,
) -> LoadResult:
    """Run wrk with one of benchmarks/wrk/*.lua (which prints a WRK_JSON line at the end).

    spread_over: a server whose workers keep connections open (gthread). wrk opens its
    keep-alive connections at once and Gunicorn hands them out unevenly, often all to one
    worker (measured: about 1 start in 4 splits 32 connections 12..20 or better): the worker
    with most connections saturates while the other idles, and throughput follows the split,
    not the code. So the run starts over (up to `attempts` times, 0.3 s each) until every
    worker holds a fair share (BALANCED_SHARE of an even split); the split is recorded.
    """
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "5s",
        "-s",
        script,
        url,
    ]
    split: list[int] = []
    for attempt in range(1, attempts + 1):
        # "{attempt}" in an argument (the POST run tag) keeps a retry's emails unique.
        arguments = [arg.replace("{attempt}", str(attempt)) for arg in args]
        if meter:
            meter.start()
        process = subprocess.Popen(
            command + (["--", *arguments] if arguments else []),
            cwd=WRK_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if spread_over is not None:
            time.sleep(0.3)
            split = connections_per_worker(spread_over)
            fair = BALANCED_SHARE * connections / max(len(split), 1)
            if attempt < attempts and (not split or min(split) < fair):
                process.kill()
                process.communicate()
                continue
        stdout, stderr = process.communicate(timeout=duration_s + 60)
        break
    noise = meter.stop() if meter else {}
    line = next((x for x in stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stdout}{stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(
        raw[key]
        for key in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx_3xx")
    )
    return LoadResult(
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        errors=errors,
        raw=raw,
        noise={**noise, "attempts": attempt, "connections_per_worker": split},
    )


class PostgresDatabase:
    """A fresh, empty database, dropped on exit; `url` points at it."""

    def __init__(self) -> None:
        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
        self.url = f"{base}/{self.name}"

    def _admin(self, statement: str) -> None:
        import psycopg2

        connection = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def __enter__(self) -> PostgresDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        return str(exc).strip()
    return None


SEED_COLUMNS = "customer, total, status, email, paid_at, created_at, updated_at"


def seed_orders(
    port: int,
    count: int,
    data_dir: Path | None,
    database_url: str | None,
    paths: tuple[str, tuple[str, str]] = ("/orders", ("/orders/", "")),
) -> dict:
    """Give the server's `orders` table rows 1..count; return the record with id 1.

    The first row goes through POST (which makes the service create its table); the rest are
    inserted straight into the table in one transaction, identically for the generated
    service, the baseline and the peers (same table shape), so seeding takes no time to speak
    of. paths: the POST path, and what comes before and after an id in a GET path.
    """
    collection, (before, after) = paths
    first_order = {"customer": "seed", "email": "seed-1@x"}
    status, body = request(port, "POST", collection, first_order)
    # The generated service applies its schema migrations on a thread at start-up (on the
    # empty database of each run) and answers 503 until they are applied, as /ready says.
    deadline = time.monotonic() + START_TIMEOUT_S
    while status == 503 and MIGRATIONS_RUNNING in body and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        status, body = request(port, "POST", collection, first_order)
    if status != 201:
        raise RuntimeError(f"seeding POST answered {status}: {body[:300]!r}")
    first = json.loads(body)
    now = datetime.now(UTC).isoformat()
    rows = [
        (f"seed {n}", n / 10, "new", f"seed-{n}@x", None, now, now) for n in range(2, count + 1)
    ]
    if database_url:
        import psycopg2

        connection = psycopg2.connect(database_url)
        try:
            with connection, connection.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO orders ({SEED_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
        finally:
            connection.close()
    else:
        assert data_dir is not None
        (path,) = data_dir.glob("*.sqlite3")
        connection = sqlite3.connect(path, timeout=30)
        try:
            with connection:
                connection.executemany(
                    f"INSERT INTO orders ({SEED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
        finally:
            connection.close()
    status, _ = request(port, "GET", f"{before}{count}{after}")
    if status != 200:
        raise RuntimeError(f"after seeding, GET {before}{count}{after} answered {status}")
    return first
