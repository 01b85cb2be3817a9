"""Peers: the generated service against the stacks users would pick instead of this template.

Run within `python -m benchmarks` (after the baselines), or alone:
`python -m benchmarks.peers [--quick] [--pairs N]`, which prints the rows and writes
benchmarks/results/peers.{json,md}.

Each peer is written the way its usual template writes it (benchmarks/peers/):
- FastAPI + SQLModel as full-stack-fastapi-template does (SessionDep, Order / OrderCreate /
  OrderPublic, psycopg 3), served by `uvicorn app.main:app --workers 2 --loop uvloop --http
  httptools`;
- Django REST framework as cookiecutter-django does (ModelSerializer, ModelViewSet on a
  DefaultRouter, ATOMIC_REQUESTS, CONN_MAX_AGE 60, psycopg 3), served by `gunicorn
  config.wsgi --workers 2` (sync workers), as cookiecutter-django's production start script.

The generated service runs at its shipped defaults: WEB_CONCURRENCY=2, DATA_DIR and
DATABASE_URL only (gthread, default threads). Per peer, both servers start afresh, each on
its own new PostgreSQL database with the same table shape, seeded with the same rows; then
for GET /orders/<id> and POST /orders a warm-up of each and `peer_pairs` back-to-back runs,
the order flipping every pair, as the main comparisons do. Servers that keep connections open
(gthread, Uvicorn) get wrk runs whose connections are spread over both workers (harness.wrk).
After each scenario's runs, the RSS of each side's worker processes (VmRSS in
/proc/PID/status, summed over the workers: Gunicorn's or Uvicorn's worker children, not the
master/supervisor nor multiprocessing's resource tracker) is recorded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/peers.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.harness import (
    BENCH_DIR,
    BIN_DIR,
    GUNICORN,
    CpuMeter,
    PostgresDatabase,
    Server,
    ServerSpec,
    seed_orders,
    wrk,
)

PEERS_DIR = BENCH_DIR / "peers"
WORKERS = 2
SCENARIOS = ("get", "post")
SIDES = ("generated", "peer")
PYTHON = sys.executable


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    directory: str  # under benchmarks/peers
    command: tuple[str, ...]  # "{port}" is replaced by the server's port
    prestart: tuple[str, ...]  # creates the schema in the fresh database
    collection: str  # POST path
    item: tuple[str, str]  # GET path: before and after the id
    keeps_connections: bool  # keep-alive: wrk's connections are spread over the workers

    def command_line(self) -> str:
        return " ".join([Path(self.command[0]).name, *self.command[1:]]).replace("{port}", "P")


PEERS = (
    Peer(
        name="fastapi_sqlmodel",
        label="FastAPI + SQLModel (Uvicorn)",
        directory="fastapi_sqlmodel",
        # full-stack-fastapi-template's Dockerfile runs `fastapi run --workers 4 app/main.py`:
        # Uvicorn with its auto loop and HTTP parser, i.e. uvloop and httptools when installed
        # (as fastapi[standard] installs them). The same server, named explicitly here.
        command=(
            str(BIN_DIR / "uvicorn"),
            "app.main:app",
            "--workers",
            str(WORKERS),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ),
        prestart=(PYTHON, "-c", "from app.core.db import init_db; init_db()"),
        collection="/orders/",  # the template's routers: @router.post("/") under a prefix
        item=("/orders/", ""),
        keeps_connections=True,
    ),
    Peer(
        name="drf",
        label="Django REST framework (Gunicorn sync)",
        directory="drf",
        # cookiecutter-django's compose/production/django/start: gunicorn config.wsgi --bind
        # 0.0.0.0:5000 --chdir=/app (default sync workers); 2 workers, like the others.
        command=(GUNICORN, "config.wsgi", "--bind", "127.0.0.1:{port}", "--workers", str(WORKERS)),
        prestart=(PYTHON, "manage.py", "migrate", "--noinput"),
        collection="/orders/",
        item=("/orders/", "/"),
        keeps_connections=False,  # sync workers close every connection
    ),
)
GENERATED_PATHS = ("/orders", ("/orders/", ""))  # the generated service's POST and GET paths


class PeerServer(Server):
    """A peer's own command line (Uvicorn or Gunicorn without the harness's config file)."""

    def __init__(self, spec: ServerSpec, work_dir: Path, peer: Peer) -> None:
        super().__init__(spec, work_dir)
        self.peer = peer

    @property
    def argv(self) -> list[str]:
        return [part.replace("{port}", str(self.port)) for part in self.peer.command]

    def worker_pids(self) -> list[int]:
        """The master's children that serve requests (Uvicorn: not the resource tracker)."""
        pids = []
        for pid in super().worker_pids():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in command:
                pids.append(pid)
        return pids


def worker_rss_mib(server: Server) -> float:
    """The summed VmRSS of the server's worker processes, in MiB."""
    kib = 0
    for pid in server.worker_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kib += next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    return kib / 1024


def paths(server: Server) -> tuple[str, tuple[str, str]]:
    if isinstance(server, PeerServer):
        return server.peer.collection, server.peer.item
    return GENERATED_PATHS


class PeerComparison:
    """The generated service against each peer, on PostgreSQL; results for report.py."""

    def __init__(self, bench: Any) -> None:
        self.bench = bench
        self.plan = bench.plan
        self.samples: list[dict[str, Any]] = []
        self.rss: list[dict[str, Any]] = []
        self.record_keys: dict[str, list[str]] = {}

    def start(self, stack: ExitStack, side: str, peer: Peer) -> Server:
        database_url = stack.enter_context(PostgresDatabase()).url
        run_dir = self.bench.run_dir("peers", side, peer.name)
        env = {"WEB_CONCURRENCY": str(WORKERS), "DATABASE_URL": database_url}
        if side == "generated":
            env["DATA_DIR"] = str(run_dir / "data")
            spec = ServerSpec("generated/defaults", self.bench.generated_dir, "main:app", env)
            server = stack.enter_context(Server(spec, run_dir))
            server.start()
            first = seed_orders(server.port, self.plan.seed_rows, None, database_url)
        else:
            # A copy beside the generated project, like the baselines: bytecode compiled afresh.
            directory = self.bench.work / "peers" / peer.directory
            if not directory.exists():
                shutil.copytree(PEERS_DIR / peer.directory, directory)
            spec = ServerSpec(f"peer/{peer.name}", directory, "-", env)
            server = stack.enter_context(PeerServer(spec, run_dir, peer))
            with (run_dir / "prestart.log").open("wb") as output:
                subprocess.run(
                    peer.prestart,
                    cwd=directory,
                    env=server.env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=True,
                )
            server.start()
            first = seed_orders(server.port, self.plan.seed_rows, None, database_url, paths(server))
        self.record_keys[side if side == "generated" else peer.name] = sorted(first)
        return server

    def load(self, server: Server, scenario: str) -> tuple[str, str, list[str]]:
        collection, (before, after) = paths(server)
        if scenario == "get":
            return "get.lua", server.url, [str(self.plan.seed_rows), before, after]
        return "post.lua", server.url, [uuid.uuid4().hex[:10] + "-{attempt}", collection]

    def measure(self, server: Server, peer: Peer, scenario: str, side: str, pair: int) -> None:
        plan = self.plan
        script, url, args = self.load(server, scenario)
        # The generated service's default is gthread (keep-alive), like the main comparisons.
        keeps = server.peer.keeps_connections if isinstance(server, PeerServer) else True
        spread = server if keeps else None
        result = wrk(
            url,
            script,
            plan.duration_s,
            *args,
            connections=plan.connections,
            threads=plan.wrk_threads,
            meter=CpuMeter(server.process.pid),
            spread_over=spread,
        )
        self.samples.append(
            {
                "peer": peer.name,
                "scenario": scenario,
                "backend": "postgresql",
                "side": side,
                "pair": pair,
                "rps": result.rps,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "requests": result.requests,
                "errors": result.errors,
                **result.noise,
            }
        )
        log(
            f"  {peer.name:16} {pair:2} {side:9} {scenario:4} {result.rps:8.0f} rps  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}  "
            f"foreign CPU {result.noise['foreign_cpu']:.2f}"
            + (f"  connections {result.noise['connections_per_worker']}" if spread else "")
        )

    def compare(self, peer: Peer) -> None:
        with ExitStack() as stack:
            servers = {side: self.start(stack, side, peer) for side in SIDES}
            for scenario in SCENARIOS:
                log(f"peers: generated vs {peer.label}, {scenario}, {self.plan.peer_pairs} pairs")
                for server in servers.values():
                    script, url, args = self.load(server, scenario)
                    wrk(url, script, self.plan.warmup_s, *args)
                for pair in range(self.plan.peer_pairs):
                    for side in SIDES if pair % 2 == 0 else SIDES[::-1]:
                        self.measure(servers[side], peer, scenario, side, pair)
                rss = {side: worker_rss_mib(server) for side, server in servers.items()}
                workers = {side: len(server.worker_pids()) for side, server in servers.items()}
                self.rss.append(
                    {"peer": peer.name, "scenario": scenario, "mib": rss, "workers": workers}
                )
                log(
                    f"  worker RSS after {scenario}: "
                    + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items())
                )

    def run(self) -> dict[str, Any]:
        for peer in PEERS:
            self.compare(peer)
        generated = self.record_keys.get("generated")
        different = {k: v for k, v in self.record_keys.items() if v != generated}
        if different:
            raise SystemExit(f"a peer returns other record fields than {generated}: {different}")
        return {
            "peers": {peer.name: peer.label for peer in PEERS},
            "commands": {
                "generated": "gunicorn -c gunicorn.conf.py main:app with WEB_CONCURRENCY=2, "
                "BIND, DATA_DIR and DATABASE_URL only",
                **{peer.name: peer.command_line() for peer in PEERS},
            },
            "pairs": self.plan.peer_pairs,
            "record_fields": self.record_keys,
            "worker_rss": self.rss,
            "samples": self.samples,
        }


def compare_all(bench: Any) -> dict[str, Any]:
    """The peer phase of `python -m benchmarks`: each peer against the generated service."""
    return PeerComparison(bench).run()


def log(message: str) -> None:
    from benchmarks.run import log as run_log

    run_log(message)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import (
        FULL,
        QUICK,
        RESULTS_DIR,
        Bench,
        Plan,
        require_wrk_and_postgres,
        scratch_directory,
    )

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 pairs per measure")
    parser.add_argument("--pairs", type=int, help="override the pairs per measure")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.pairs:
        plan = Plan(**{**asdict(plan), "peer_pairs": args.pairs})
    require_wrk_and_postgres()
    with scratch_directory("autocoder-bench-peers-", args.keep) as work:
        bench = Bench(plan, work)
        results = compare_all(bench)
        rows, summary = report.peer_rows(results)
        table = report.markdown_table(rows)
        args.output.mkdir(parents=True, exist_ok=True)
        data = {"plan": asdict(plan), "rows": rows, "summary": summary, **results}
        (args.output / "peers.json").write_text(json.dumps(data, indent=2) + "\n")
        (args.output / "peers.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
