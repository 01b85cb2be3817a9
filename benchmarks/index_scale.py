"""python -m benchmarks.index_scale: does `index: true` keep an equality filter flat?

Two projects are baked from examples/order_service.yaml, one with `index: true` on
`customer` and one without (the contrast), each on its own throwaway PostgreSQL database.
Rows go straight into `orders` with COPY; GET /orders?customer=<existing value> is timed
over HTTP at 10,000 rows, then at 1,000,000 (the same table, grown), both services up at
once and loaded in turn. Target: p50 at 1M within 1.5 x p50 at 10k, with the index.

Writes benchmarks/results/index_scale.{json,md}. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/index_scale.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.harness import POSTGRES_ADMIN_URL, CpuMeter, PostgresDatabase, postgres_reachable
from benchmarks.report import NOISY_CPU
from benchmarks.run import (
    BLUEPRINT,
    RESULTS_DIR,
    TEMPLATE_DIR,
    cookiecutter_bake,
    log,
    scratch_directory,
)
from service_validator.server import GunicornServer, shell_environment

SIDES = ("indexed", "unindexed")
SIDE_LABELS = {"indexed": "index: true", "unindexed": "no index"}
SIZES = (10_000, 1_000_000)  # the table grows from the first size to the second
FIELD = "customer"
INDEX = "orders_customer_index"  # what the migration names the index of `index: true`
ROWS_PER_CUSTOMER = 5  # every customer has this many orders, spread over the table
STATUSES = ("new", "paid", "shipped")  # the blueprint's enum
TARGET_RATIO = 1.5  # indexed: p50 at the largest size <= 1.5 x p50 at the smallest
COPY_CHUNK_ROWS = 100_000
LOAD_TIMEOUT_S = 600  # statement_timeout of the loading session (COPY, VACUUM)
MIGRATE_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 15.0
PHASE_TIME_LIMIT_S = 900.0  # the measurement of one table size, both projects
BOOTSTRAP_RESAMPLES = 2000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Plan:
    warmup: int  # unmeasured requests per project and size
    blocks: int  # measured blocks per project and size, alternating projects
    block: int  # requests per block

    @property
    def requests(self) -> int:
        return self.blocks * self.block


FULL = Plan(warmup=50, blocks=8, block=50)  # 400 measured requests per project and size
QUICK = Plan(warmup=10, blocks=2, block=25)


# -- projects and data --------------------------------------------------------------------


def blueprint(indexed: bool) -> dict[str, Any]:
    """The example blueprint, with or without `index: true` on the filtered field."""
    data = yaml.safe_load(BLUEPRINT.read_text(encoding="utf-8"))
    (store,) = [c for c in data["components"] if c["type"] == "store"]
    spec = store["config"]["fields"][FIELD]
    spec.pop("index", None)
    if indexed:
        spec["index"] = True
    return data


def page_size(data: dict[str, Any]) -> int:
    (endpoint,) = [c for c in data["components"] if c["type"] == "api_endpoint"]
    return int(endpoint["config"]["page_size"])


def bake(work: Path, side: str) -> Path:
    path = work / "blueprints" / f"{side}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = blueprint(side == "indexed")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return Path(cookiecutter_bake(work / side, {"blueprint": str(path)}))


def migrate(project: Path, database_url: str, work_dir: Path) -> str:
    """python -m app.migrate in the project, configured as the service (its README)."""
    env = {**shell_environment(), "DATABASE_URL": database_url, "DATA_DIR": str(work_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "app.migrate"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{project.name}: app.migrate exited {result.returncode}: "
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout.strip()


def connect(database_url: str):
    import psycopg2

    connection = psycopg2.connect(
        database_url, connect_timeout=5, options=f"-c statement_timeout={LOAD_TIMEOUT_S * 1000}"
    )
    connection.autocommit = True
    return connection


def field_indexes(database_url: str) -> list[str]:
    """The indexes on orders(customer), as PostgreSQL lists them."""
    with connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'orders' "
            "AND indexdef LIKE %s ORDER BY indexname",
            (f"%({FIELD})%",),
        )
        found = [row[0] for row in cursor.fetchall()]
    connection.close()
    return found


def customer_of(row: int, batch_start: int, batch_rows: int) -> int:
    """Customer numbers: each batch of rows brings batch_rows / ROWS_PER_CUSTOMER new
    customers, whose orders are spread evenly over the batch (not side by side)."""
    customers = batch_rows // ROWS_PER_CUSTOMER
    return batch_start // ROWS_PER_CUSTOMER + (row - batch_start) % customers


def copy_chunks(batch_start: int, batch_rows: int) -> Iterator[tuple[int, str]]:
    """COPY text of rows batch_start .. batch_start + batch_rows - 1 (0-based), in chunks:
    every NOT NULL column and the rest of a plausible order, the same on every run."""
    for chunk_start in range(batch_start, batch_start + batch_rows, COPY_CHUNK_ROWS):
        count = min(COPY_CHUNK_ROWS, batch_start + batch_rows - chunk_start)
        rng = random.Random(chunk_start)
        lines = []
        for row in range(chunk_start, chunk_start + count):
            created = EPOCH + timedelta(seconds=row)
            status = STATUSES[rng.randrange(len(STATUSES))]
            paid = "\\N" if status == "new" else (created + timedelta(hours=1)).isoformat()
            lines.append(
                f"customer-{customer_of(row, batch_start, batch_rows)}\t"
                f"{rng.randrange(0, 100_000) / 100}\t{status}\torder-{row}@example.com\t"
                f"{paid}\t{created.isoformat()}\t{created.isoformat()}\n"
            )
        yield count, "".join(lines)


def load(database_url: str, batch_start: int, batch_rows: int) -> dict[str, float]:
    """COPY the batch into orders, then VACUUM (ANALYZE): fresh statistics for the planner,
    and no autovacuum of the new rows starting in the middle of a measurement."""
    connection = connect(database_url)
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            for _count, text in copy_chunks(batch_start, batch_rows):
                cursor.copy_expert(
                    "COPY orders (customer, total, status, email, paid_at, created_at, "
                    "updated_at) FROM STDIN",
                    io.StringIO(text),
                )
            copied = time.perf_counter() - started
            cursor.execute("VACUUM (ANALYZE) orders")
            analysed = time.perf_counter() - started - copied
            cursor.execute("SELECT count(*) FROM orders")
            (rows,) = cursor.fetchone()
    finally:
        connection.close()
    expected = batch_start + batch_rows
    if rows != expected:
        raise RuntimeError(f"orders holds {rows} rows after loading, not {expected}")
    return {"copy_s": round(copied, 2), "vacuum_analyze_s": round(analysed, 2)}


# -- measuring ----------------------------------------------------------------------------


class CpuMeterWithQueryWorkers(CpuMeter):
    """CpuMeter, also counting PostgreSQL's parallel query workers: each lives for one query
    and is reaped by the postmaster, so once it has exited its CPU time is only in the
    postmaster's children's time (a sequential scan of 1M rows runs in two of them)."""

    def _ours(self) -> float:
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
        return super()._ours() + ticks


class KeepAliveClient:
    """Sequential GETs on one keep-alive connection to the service (a new one when it closes)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def get(self, path: str) -> tuple[int | None, bytes, float]:
        """(status, body, seconds); status None when the service did not answer."""
        for attempt in (1, 2):  # a kept-alive connection the server has closed: once more
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S
                )
            started = time.perf_counter()
            try:
                self.connection.request("GET", path)
                response = self.connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                self.reconnects += 1
                if attempt == 2:
                    return None, b"", time.perf_counter() - started
                continue
            seconds = time.perf_counter() - started
            if response.will_close:
                self.close()
            return response.status, body, seconds
        raise AssertionError("unreachable")


def answer_problem(status: int | None, body: bytes) -> str | None:
    """None when the answer is a page with exactly the customer's orders, else what is wrong."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    items = json.loads(body)["items"]
    if len(items) != ROWS_PER_CUSTOMER or len({item[FIELD] for item in items}) != 1:
        return f"{len(items)} items instead of the customer's {ROWS_PER_CUSTOMER}"
    return None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def ratio_interval(large: list[float], small: list[float]) -> list[float]:
    """A bootstrap 95% interval of median(large) / median(small) (seeded, so repeatable)."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(large, k=len(large)))
        / statistics.median(rng.choices(small, k=len(small)))
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return [ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]]


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes, depth first."""
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]


def describe(node: dict[str, Any]) -> str:
    text = node["Node Type"]
    if "Index Name" in node:
        text += f" using {node['Index Name']}"
    elif "Relation Name" in node:
        text += f" on {node['Relation Name']}"
    return text


def explain_service_statement(database_url: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the list statement the service last ran, as PostgreSQL
    saw it (pg_stat_activity keeps each connection's last statement; the service's reads run
    in autocommit, with the values inlined by psycopg2)."""
    with connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE 'SELECT %%' AND query LIKE %s "
            "ORDER BY state_change DESC LIMIT 1",
            (f'%"{FIELD}" = %',),
        )
        row = cursor.fetchone()
        if row is None:
            raise RuntimeError("no list statement of the service in pg_stat_activity")
        statement = row[0]
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement)
        (explained,) = cursor.fetchone()
    connection.close()
    top = explained[0]["Plan"]
    nodes = plan_nodes(top)
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    return {
        "statement": statement,
        "top_node": describe(top),
        "scan_node": " > ".join(describe(n) for n in scans) or "-",
        "nodes": " > ".join(describe(n) for n in nodes),
        "uses_index": any(n.get("Index Name") == INDEX for n in nodes),
        "execution_ms": explained[0]["Execution Time"],
        "shared_buffers_hit_read": [top.get("Shared Hit Blocks"), top.get("Shared Read Blocks")],
    }


def measure_size(
    plan: Plan,
    rows: int,
    servers: dict[str, GunicornServer],
    urls: dict[str, str],
) -> dict[str, Any]:
    """Both projects at one table size: a warm-up each, then blocks of sequential requests,
    alternating projects (the order flipping from one block to the next), the same random
    existing customers on both sides. Noise guard as in the main benchmark: a block run while
    other processes took more than NOISY_CPU is left out when at least half are clean."""
    customers = rows // ROWS_PER_CUSTOMER
    rng = random.Random(rows)
    warmup = [rng.randrange(customers) for _ in range(plan.warmup)]
    measured = [rng.randrange(customers) for _ in range(plan.requests)]
    deadline = time.monotonic() + PHASE_TIME_LIMIT_S
    clients = {side: KeepAliveClient(servers[side].port) for side in SIDES}
    blocks: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    problems: dict[str, list[str]] = {side: [] for side in SIDES}

    def run(side: str, numbers: list[int]) -> dict[str, Any]:
        client = clients[side]
        client.close()  # a fresh connection per block: the other side's block may outlast
        client.get("/health")  # the keep-alive timeout; opened here, outside the timings
        meter = CpuMeterWithQueryWorkers(servers[side].process.pid)
        own, wall = time.process_time(), time.perf_counter()
        meter.start()
        samples = []
        for number in numbers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{rows} rows: over the {PHASE_TIME_LIMIT_S:.0f} s limit")
            status, body, seconds = client.get(f"/orders?{FIELD}=customer-{number}")
            problem = answer_problem(status, body)
            if problem:
                problems[side].append(problem)
            else:
                samples.append(round(seconds * 1000, 3))
        noise = meter.stop()
        # The client (this process) is not among the processes CpuMeter counts as ours.
        own_cpu = (time.process_time() - own) / (time.perf_counter() - wall)
        foreign = round(max(noise["foreign_cpu"] - own_cpu, 0.0), 3)
        return {"foreign_cpu": foreign, "samples_ms": samples}

    for side in SIDES:
        run(side, warmup)
    warmup_failed = {side: len(problems[side]) for side in SIDES}
    problems = {side: [] for side in SIDES}
    for block in range(plan.blocks):
        numbers = measured[block * plan.block : (block + 1) * plan.block]
        for side in SIDES if block % 2 == 0 else SIDES[::-1]:
            blocks[side].append(run(side, numbers))
        log(
            f"  {rows:>9,} rows, block {block + 1}/{plan.blocks}: "
            + ", ".join(
                f"{side} p50 {statistics.median(blocks[side][-1]['samples_ms']):.2f} ms "
                f"(foreign CPU {blocks[side][-1]['foreign_cpu']:.2f})"
                for side in SIDES
                if blocks[side][-1]["samples_ms"]
            )
        )
    results = {}
    for side in SIDES:
        clients[side].close()
        clean = [b for b in blocks[side] if b["foreign_cpu"] <= NOISY_CPU]
        used = clean if 2 * len(clean) >= len(blocks[side]) else blocks[side]
        values = [v for b in used for v in b["samples_ms"]]
        results[side] = {
            "rows": rows,
            "requests": plan.requests,
            "failed": len(problems[side]),
            "failures": problems[side][:5],
            "warmup_failed": warmup_failed[side],
            "reconnects": clients[side].reconnects,
            "blocks_used": len(used),
            "blocks_disturbed": len(blocks[side]) - len(clean),
            "samples_used": len(values),
            "p50_ms": statistics.median(values) if values else None,
            "p99_ms": percentile(values, 0.99) if values else None,
            "mean_ms": statistics.fmean(values) if values else None,
            "foreign_cpu_max": max(b["foreign_cpu"] for b in blocks[side]),
            "explain": explain_service_statement(urls[side]),
            "samples_ms": values,
            "blocks": blocks[side],
        }
        explained = results[side]["explain"]
        log(
            f"  {rows:>9,} rows, {side}: p50 {results[side]['p50_ms']:.2f} ms, "
            f"p99 {results[side]['p99_ms']:.2f} ms, failed {len(problems[side])}, "
            f"blocks used {len(used)}/{len(blocks[side])}; plan {explained['nodes']} "
            f"({explained['execution_ms']:.2f} ms in PostgreSQL)"
        )
    return results


# -- the run ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=TEMPLATE_DIR, capture_output=True, text=True, timeout=30
        )
        return result.stdout.strip()

    with connect(POSTGRES_ADMIN_URL) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('server_version'), "
            "current_setting('shared_buffers'), "
            "current_setting('max_parallel_workers_per_gather')"
        )
        version, shared_buffers, parallel = cursor.fetchone()
    connection.close()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": version,
        "shared_buffers": shared_buffers,
        "max_parallel_workers_per_gather": parallel,
        "template_commit": git("rev-parse", "HEAD"),
        "template_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def summarise(sizes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    small, large = sizes[SIZES[0]], sizes[SIZES[-1]]
    summary = {}
    for side in SIDES:
        a, b = small[side], large[side]
        complete = a["p50_ms"] is not None and b["p50_ms"] is not None
        p50_ratio = b["p50_ms"] / a["p50_ms"] if complete else None
        summary[side] = {
            "p50_ratio": p50_ratio,
            "p50_ratio_interval": (
                ratio_interval(b["samples_ms"], a["samples_ms"]) if complete else None
            ),
            "p99_ratio": b["p99_ms"] / a["p99_ms"] if complete else None,
            "scan_node_at_largest": b["explain"]["scan_node"],
            "uses_index_at_largest": b["explain"]["uses_index"],
        }
    indexed = summary["indexed"]
    indexed["target"] = f"<= {TARGET_RATIO:.2f}"
    indexed["met"] = (
        indexed["p50_ratio"] is not None
        and indexed["p50_ratio"] <= TARGET_RATIO
        and all(r["indexed"]["failed"] + r["indexed"]["warmup_failed"] == 0 for r in (small, large))
    )
    return summary


def markdown(results: dict[str, Any]) -> str:
    info, summary = results["info"], results["summary"]
    m = info["machine"]
    plan = info["plan"]
    loads = "; ".join(
        f"{size:,} rows: "
        + ", ".join(
            f"{side} COPY {load['copy_s']:.1f} s + VACUUM (ANALYZE) "
            f"{load['vacuum_analyze_s']:.1f} s"
            for side, load in sides.items()
        )
        for size, sides in ((int(k), v) for k, v in info["loads"].items())
    )
    lines = [
        "# Benchmark: `index: true` keeps an equality filter flat",
        "",
        f"- date: {info['date']} ({info['elapsed_s']} s){' (quick run)' if info['quick'] else ''}",
        f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}, PostgreSQL {m['postgresql']} (shared_buffers "
        f"{m['shared_buffers']}, max_parallel_workers_per_gather "
        f"{m['max_parallel_workers_per_gather']})",
        "- load average before/after: "
        + " / ".join(" ".join(f"{x:.2f}" for x in la) for la in info["load_average"]),
        f"- template: {m['template_commit'][:12]}"
        + (" (working tree with uncommitted changes)" if m["template_dirty"] else ""),
        f"- projects: `{BLUEPRINT.relative_to(TEMPLATE_DIR)}` baked twice, `{FIELD}` with "
        f"`index: true` (migration made: {', '.join(info['indexes']['indexed']) or 'none'}) "
        f"and without (indexes on {FIELD}: "
        f"{', '.join(info['indexes']['unindexed']) or 'none'}); each on its own new "
        "database, migrated with `python -m app.migrate`, served by `gunicorn -c "
        "gunicorn.conf.py main:app` with BIND, DATABASE_URL, DATA_DIR and WEB_CONCURRENCY=2 "
        "only; both up at once",
        f"- rows: COPY straight into `orders`, {ROWS_PER_CUSTOMER} orders per customer "
        f"(`customer-<n>`, spread over the table), unique emails, then VACUUM (ANALYZE); the "
        f"table grows from {SIZES[0]:,} to {SIZES[-1]:,} rows. {loads}",
        f"- requests: `GET /orders?{FIELD}=customer-<n>` for random existing customers (a page "
        f"of {info['page_size']}: every answer checked to hold the customer's "
        f"{ROWS_PER_CUSTOMER} orders), sequential, one keep-alive connection; per project and "
        f"size {plan['warmup']} unmeasured, then {plan['blocks']} blocks of {plan['block']}, "
        "alternating projects (order flipping each block), the same customers on both sides",
        "- p50: median; p99: nearest rank; ratio: p50 at "
        f"{SIZES[-1]:,} / p50 at {SIZES[0]:,} rows, with a bootstrap 95% interval; plan: "
        "EXPLAIN (ANALYZE) of the service's own last list statement (from pg_stat_activity), "
        "its first scan node and the time PostgreSQL spent",
        f"- noise: a block run while other processes took more than {NOISY_CPU} CPU (the "
        "machine's busy time less the services', PostgreSQL's, the kernel threads' and the "
        "client's) is left out when at least half the blocks of its project and size are "
        "clean; failed: wrong or failed answers, warm-up included",
        "",
        "| project | rows | p50 | p99 | requests | failed | blocks used | max foreign CPU | "
        "scan node (EXPLAIN) | in PostgreSQL |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for side in SIDES:
        for size in SIZES:
            r = results["sizes"][str(size)][side]
            ms = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f} ms"
            p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f} ms"
            foreign = "-" if r["foreign_cpu_max"] is None else f"{r['foreign_cpu_max']:.2f}"
            lines.append(
                f"| {SIDE_LABELS[side]} | {size:,} | {ms} | {p99} | {r['requests']} | "
                f"{r['failed'] + r['warmup_failed']} | {r['blocks_used']}/{plan['blocks']} | "
                f"{foreign} | {r['explain']['scan_node']} | "
                f"{r['explain']['execution_ms']:.2f} ms |"
            )
    lines += [
        "",
        f"| measure | {SIDE_LABELS['indexed']} | {SIDE_LABELS['unindexed']} | target | met? |",
        "| --- | ---: | ---: | --- | --- |",
    ]

    def ratio(side: str, key: str) -> str:
        value = summary[side][key]
        if value is None:
            return "-"
        interval = summary[side].get(f"{key}_interval") if key == "p50_ratio" else None
        return f"{value:.2f}" + (f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "")

    met = "yes" if summary["indexed"]["met"] else "no"
    lines += [
        f"| p50 at {SIZES[-1]:,} / p50 at {SIZES[0]:,} | {ratio('indexed', 'p50_ratio')} | "
        f"{ratio('unindexed', 'p50_ratio')} | {SIDE_LABELS['indexed']}: <= "
        f"{TARGET_RATIO:.2f} x | {met} |",
        f"| p99 at {SIZES[-1]:,} / p99 at {SIZES[0]:,} | {ratio('indexed', 'p99_ratio')} | "
        f"{ratio('unindexed', 'p99_ratio')} | - | - |",
        f"| plan at {SIZES[-1]:,} rows | {summary['indexed']['scan_node_at_largest']} | "
        f"{summary['unindexed']['scan_node_at_largest']} | {INDEX} used with the index | "
        f"{'yes' if summary['indexed']['uses_index_at_largest'] else 'no'} |",
        "",
        f"Plans at {SIZES[-1]:,} rows, node by node: "
        + "; ".join(
            f"{SIDE_LABELS[side]}: {results['sizes'][str(SIZES[-1])][side]['explain']['nodes']}"
            for side in SIDES
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def write(results: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "index_scale.json", directory / "index_scale.md"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(results), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.index_scale", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10 warm-up and 50 measured requests"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    problem = postgres_reachable()
    if problem:
        raise SystemExit(f"PostgreSQL is unreachable: {problem}")
    # SIGTERM unwinds like Ctrl-C: the servers stop and the databases are dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "plan": asdict(plan),
        "machine": machine(),
        "load_average": [os.getloadavg()],
        "page_size": page_size(blueprint(True)),
        "loads": {},
    }
    sizes: dict[int, dict[str, Any]] = {}
    with scratch_directory("autocoder-index-scale-", args.keep) as work, ExitStack() as stack:
        projects = {side: bake(work, side) for side in SIDES}
        log(f"baked {', '.join(str(p) for p in projects.values())}")
        urls = {}
        for side in SIDES:
            database = stack.enter_context(PostgresDatabase())
            urls[side] = database.url
            log(f"{side}: database {database.name}: {migrate(projects[side], database.url, work)}")
        info["indexes"] = {side: field_indexes(urls[side]) for side in SIDES}
        log(f"indexes on orders({FIELD}): {info['indexes']}")
        if INDEX not in info["indexes"]["indexed"]:
            log(f"WARNING: `index: true` made no {INDEX}")
        servers: dict[str, GunicornServer] = {}
        loaded = 0
        for size in SIZES:
            info["loads"][size] = {}
            for side in SIDES:
                log(f"{side}: COPY rows {loaded + 1:,}..{size:,}")
                info["loads"][size][side] = load(urls[side], loaded, size - loaded)
                log(f"{side}: {info['loads'][size][side]}")
            loaded = size
            if not servers:
                for side in SIDES:
                    server = GunicornServer(
                        projects[side], work / "runs" / side, {"DATABASE_URL": urls[side]}
                    )
                    servers[side] = stack.enter_context(server)
                    log(f"{side}: service on {server.url}")
            log(f"measuring at {size:,} rows")
            sizes[size] = measure_size(plan, size, servers, urls)
    info["load_average"].append(os.getloadavg())
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    results = {
        "info": info,
        "summary": summarise(sizes),
        "sizes": {str(size): value for size, value in sizes.items()},
    }
    paths = write(results, args.output)
    log("wrote " + ", ".join(str(path) for path in paths))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
