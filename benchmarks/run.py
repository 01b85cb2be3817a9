"""python -m benchmarks [--quick]: the generated service against hand-written baselines.

Writes benchmarks/results/latest.{json,md,png}. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks import peers, report
from benchmarks.harness import (
    BENCH_DIR,
    BIN_DIR,
    SETTINGS_ALLOWED_TO_DIFFER,
    CpuMeter,
    PostgresDatabase,
    Server,
    ServerSpec,
    postgres_reachable,
    request,
    resolved_gunicorn_settings,
    seed_orders,
    settings_differences,
    wrk,
)
from service_validator import dockerfile
from service_validator.server import DEPLOYMENT_SETTINGS, rss_kib

TEMPLATE_DIR = BENCH_DIR.parent
BLUEPRINT = TEMPLATE_DIR / "examples" / "order_service.yaml"
RESULTS_DIR = BENCH_DIR / "results"
WORKERS = 2
SIDES = ("baseline", "generated")
# The comparisons: the scenarios each measures, and the backend of each side's server.
COMPARISONS = {
    "health": (["health"], {"baseline": None, "generated": "sqlite"}),
    "sqlite": (["get", "post"], {"baseline": "sqlite", "generated": "sqlite"}),
    "postgresql": (["get", "post"], {"baseline": "postgresql", "generated": "postgresql"}),
}


@dataclass(frozen=True)
class Config:
    """A Gunicorn configuration both sides run: settings beyond a deployment's choices."""

    env: dict[str, str]
    comparisons: tuple[str, ...] = tuple(COMPARISONS)
    startup: bool = True
    shipped: bool = True  # False: a row for what it costs, never judged against the targets
    # True: the other side is the generated service at the shipped defaults, not a baseline,
    # so the ratio is what these settings cost the generated service.
    against_defaults: bool = False


# "gthread" is the shipped defaults (4 threads, no recycling): the headline. "1 thread" is
# GUNICORN_THREADS=1, against a baseline in Gunicorn's sync workers. The recycling row
# measures what the former default (recycling every 10,000 requests) costs the generated
# service, against itself at the shipped defaults; it is not shipped, so it is never a
# headline.
CONFIGS = {
    "gthread": Config({}),
    # GUNICORN_THREADS=1, a supported setting (one request at a time per worker, for code
    # that is not thread-safe): the generated worker, against sync workers in the baseline.
    "1 thread": Config({"GUNICORN_THREADS": "1"}),
    # The former default, measured for what it costs; never the headline, never judged.
    "recycling every 10,000 (not shipped; baseline: the shipped defaults)": Config(
        {"GUNICORN_MAX_REQUESTS": "10000", "GUNICORN_MAX_REQUESTS_JITTER": "1000"},
        comparisons=("health",),
        startup=False,
        shipped=False,
        against_defaults=True,
    ),
}


@dataclass(frozen=True)
class Plan:
    pairs: int  # alternated runs of each side, per measure
    duration_s: float
    warmup_s: float
    startup_repetitions: int
    bake_repetitions: int
    bake_sizes: tuple[int, ...] = (1, 10, 100, 500, 1000)
    seed_rows: int = 1000
    connections: int = 32
    wrk_threads: int = 2
    peer_pairs: int = 10  # per measure of the peer phase (benchmarks/peers.py)


# Many short runs, tightly alternated, rather than a few long ones: on 2 shared cores the
# speed of the same server moves by up to a quarter from one second to the next (the CPU time
# per request moves with it, so it is the machine, not idle time), and consecutive runs are
# no more alike than distant ones. Each pair of back-to-back runs gives one ratio; the median
# of 30 such ratios is about four times steadier than the ratio of two medians of 7 runs.
FULL = Plan(pairs=30, duration_s=1, warmup_s=1, startup_repetitions=15, bake_repetitions=5)
QUICK = Plan(
    pairs=3, duration_s=1, warmup_s=1, startup_repetitions=1, bake_repetitions=1, peer_pairs=2
)


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", flush=True)


class Bench:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.generated_dir = Path(
            cookiecutter_bake(work / "generated", {"blueprint": str(BLUEPRINT)})
        )
        # The baselines run from a copy beside the generated project, so both start from a
        # directory of the same kind and compile their bytecode on the first start.
        self.baseline_dir = work / "baseline"
        shutil.copytree(BENCH_DIR / "baselines", self.baseline_dir)
        self.samples: list[dict[str, Any]] = []
        self.runs = 0
        # per (configuration, side), set by check_settings()
        self.worker_class: dict[tuple[str, str], str] = {}

    def run_dir(self, config: str, side: str, what: str) -> Path:
        self.runs += 1
        return self.work / "runs" / f"{self.runs:03d}-{config}-{side}-{what}"

    def spec(
        self,
        side: str,
        config: str,
        backend: str | None,
        run_dir: Path,
        database_url: str | None = None,
    ) -> ServerSpec:
        """side generated or baseline; backend None (health only), sqlite or postgresql."""
        env = {  # a deployment's choices, then the configuration's own settings
            "WEB_CONCURRENCY": str(WORKERS),
            "DATA_DIR": str(run_dir / "data"),
            "DATABASE_URL": database_url or "",
            **CONFIGS[config].env,
        }
        if side == "generated":
            return ServerSpec(f"generated/{config}", self.generated_dir, "main:app", env)
        if CONFIGS[config].against_defaults:
            shipped = {key: value for key, value in env.items() if key not in CONFIGS[config].env}
            return ServerSpec("generated/defaults", self.generated_dir, "main:app", shipped)
        app = "orders_app:app" if backend else "health_app:app"
        return ServerSpec(f"baseline/{config}/{app}", self.baseline_dir, app, env)

    def check_settings(self) -> dict[str, Any]:
        """Gunicorn must resolve the same settings for both sides, in every configuration;
        against the shipped defaults, exactly the configuration's own settings differ."""
        checked = {}
        for config, settings in CONFIGS.items():
            run_dir = self.run_dir(config, "both", "settings")
            resolved = {
                side: resolved_gunicorn_settings(
                    self.spec(side, config, "sqlite", run_dir / side), run_dir / side
                )
                for side in SIDES
            }
            # As Gunicorn resolves it (a repr): what decides how wrk's connections are spread.
            for side in SIDES:
                self.worker_class[config, side] = resolved[side]["worker_class"].strip("'")
            differences = settings_differences(resolved["generated"], resolved["baseline"])
            expected = set()
            if settings.against_defaults:
                expected = {name.removeprefix("GUNICORN_").lower() for name in settings.env}
            if set(differences) != expected:
                raise SystemExit(f"Gunicorn settings differ ({config}): {differences}")
            allowed = sorted(SETTINGS_ALLOWED_TO_DIFFER | expected)
            checked[config] = "identical except " + ", ".join(allowed)
        return checked

    # -- throughput and latency -------------------------------------------------------------

    def measure(self, server: Server, scenario: str, backend: str, side: str, **keys) -> None:
        plan = self.plan
        script, url, args = self.load(server, scenario)
        options = {"connections": plan.connections, "threads": plan.wrk_threads}
        meter = CpuMeter(server.process.pid)
        # Threaded workers keep connections open (and get them unevenly); Gunicorn's sync
        # workers and the generated worker with one thread close each one after its response.
        closes_each = self.worker_class[keys["config"], side] == "sync" or (
            side == "generated" and CONFIGS[keys["config"]].env.get("GUNICORN_THREADS") == "1"
        )
        spread = None if closes_each else server
        result = wrk(
            url, script, plan.duration_s, *args, meter=meter, spread_over=spread, **options
        )
        sample = {
            "scenario": scenario,
            "backend": backend,
            "side": side,
            **keys,
            "rps": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "requests": result.requests,
            "errors": result.errors,
            **result.noise,
        }
        self.samples.append(sample)
        log(
            f"  {keys['config']:7} {keys['pair']:2} {side:9} {scenario:6} {backend:10} "
            f"{result.rps:8.0f} rps  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
            f"errors {result.errors}  foreign CPU {result.noise['foreign_cpu']:.2f}"
            + (f"  connections {result.noise['connections_per_worker']}" if spread else "")
        )

    def load(self, server: Server, scenario: str) -> tuple[str, str, list[str]]:
        """The wrk script, URL and script arguments of a scenario."""
        if scenario == "health":
            return "health.lua", f"{server.url}/health", []
        if scenario == "get":
            return "get.lua", server.url, [str(self.plan.seed_rows)]
        # POST emails are unique per request: a run tag, "{attempt}" for wrk restarts.
        return "post.lua", server.url, [uuid.uuid4().hex[:10] + "-{attempt}"]

    def start_server(self, stack: ExitStack, side: str, config: str, backend: str | None) -> Server:
        """A fresh server (and database) for one comparison, seeded when it has a backend."""
        database_url = None
        if backend == "postgresql":
            database_url = stack.enter_context(PostgresDatabase()).url
        run_dir = self.run_dir(config, side, backend or "health")
        spec = self.spec(side, config, backend, run_dir, database_url)
        server = stack.enter_context(Server(spec, run_dir))
        server.start()
        if backend:
            first = seed_orders(
                server.port, self.plan.seed_rows, Path(spec.env["DATA_DIR"]), database_url
            )
            self.record_keys.setdefault(side, sorted(first))
        return server

    def compare(self, comparison: str, config: str) -> None:
        """Both servers of a comparison up at once, loaded in turn: for each scenario a
        warm-up of each, then `pairs` back-to-back runs of the two, the order flipping from
        one pair to the next so that neither side always goes first."""
        scenarios, backends = COMPARISONS[comparison]
        with ExitStack() as stack:
            servers = {
                side: self.start_server(stack, side, config, backends[side]) for side in SIDES
            }
            for scenario in scenarios:
                label = "-" if scenario == "health" else comparison
                log(f"throughput: {config}, {scenario} {label}, {self.plan.pairs} pairs")
                for server in servers.values():
                    script, url, args = self.load(server, scenario)
                    wrk(url, script, self.plan.warmup_s, *args)
                for pair in range(self.plan.pairs):
                    for side in SIDES if pair % 2 == 0 else SIDES[::-1]:
                        self.measure(servers[side], scenario, label, side, config=config, pair=pair)

    def throughput(self) -> None:
        self.record_keys: dict[str, list[str]] = {}
        for config, settings in CONFIGS.items():
            for comparison in settings.comparisons:
                self.compare(comparison, config)
        if self.record_keys.get("generated") != self.record_keys.get("baseline"):
            raise SystemExit(f"the services return different record fields: {self.record_keys}")

    # -- start-up ---------------------------------------------------------------------------

    def startup(self) -> list[dict[str, Any]]:
        """Seconds to the first 200, and the master's memory then, as the image runs it: the
        Dockerfile's ENV (no bytecode written at run time) and its compileall step, on copies
        of both directories that no server has run from."""
        results = []
        directories = {}
        for side, source in (("generated", self.generated_dir), ("baseline", self.baseline_dir)):
            directories[side] = self.work / "image" / side
            shutil.copytree(source, directories[side], ignore=shutil.ignore_patterns("__pycache__"))
        # The image's ENV less where it runs (PATH, HOME) and what a deployment chooses.
        image_env = {
            key: value
            for key, value in dockerfile.environment(self.generated_dir, self.work).items()
            if key not in ("PATH", "HOME", *DEPLOYMENT_SETTINGS)
        }
        for step in dockerfile.python_run_steps(self.generated_dir):
            subprocess.run(step, cwd=directories["generated"], check=True, timeout=300)
        compile_all = [sys.executable, "-m", "compileall", "-q", "."]
        subprocess.run(compile_all, cwd=directories["baseline"], check=True, timeout=300)
        for config, settings in CONFIGS.items():
            if not settings.startup:
                continue
            log(f"start-up: {config}, as the image runs it")
            pair = [("baseline", None), ("generated", "sqlite")]
            for rep in range(-1, self.plan.startup_repetitions):  # -1: unmeasured warm start
                for side, backend in pair if rep % 2 == 0 else pair[::-1]:  # alternated
                    run_dir = self.run_dir(config, side, "startup")
                    spec = self.spec(side, config, backend, run_dir)
                    spec.directory = directories[side]
                    spec.env.update(image_env)
                    with Server(spec, run_dir) as server:
                        seconds = server.start()
                        status, _ = request(server.port, "GET", "/health")
                        master_mib = rss_kib(server.process.pid) / 1024
                    if rep >= 0:
                        results.append(
                            {
                                "config": config,
                                "side": side,
                                "pair": rep,
                                "seconds": seconds,
                                "master_rss_mib": master_mib,
                            }
                        )
                        log(
                            f"  {config:7} {side:9} {seconds:.3f} s to first 200 ({status}), "
                            f"master {master_mib:.1f} MiB"
                        )
        return results

    # -- cookiecutter -----------------------------------------------------------------------

    def bake_times(self) -> list[dict[str, Any]]:
        sys.path.insert(0, str(TEMPLATE_DIR / "tests"))
        from generated_blueprints import large_blueprint

        files = {}
        for size in self.plan.bake_sizes:
            blueprint = large_blueprint(size + size % 2)  # it makes pairs: trim odd sizes
            blueprint["components"] = blueprint["components"][:size]
            files[size] = self.work / "blueprints" / f"components-{size}.yaml"
            files[size].parent.mkdir(parents=True, exist_ok=True)
            files[size].write_text(yaml.safe_dump(blueprint, sort_keys=False), encoding="utf-8")
        results = []
        for rep in range(self.plan.bake_repetitions):
            sizes = self.plan.bake_sizes if rep % 2 == 0 else self.plan.bake_sizes[::-1]
            for size in sizes:
                out = self.work / "bakes" / f"{size}-{rep}"
                command = [
                    str(BIN_DIR / "cookiecutter"),
                    "--no-input",
                    "-o",
                    str(out),
                    str(TEMPLATE_DIR),
                    f"blueprint={files[size]}",
                ]
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, timeout=300)
                seconds = time.perf_counter() - started
                shutil.rmtree(out)
                results.append({"components": size, "rep": rep, "seconds": seconds})
                log(f"  cookiecutter --no-input, {size:3} components: {seconds:.3f} s")
        return results


def cookiecutter_bake(output_dir: Path, extra_context: dict[str, str]) -> str:
    from cookiecutter.main import cookiecutter

    return cookiecutter(
        str(TEMPLATE_DIR), no_input=True, output_dir=str(output_dir), extra_context=extra_context
    )


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
        result = subprocess.run(["git", *args], cwd=TEMPLATE_DIR, capture_output=True, text=True)
        return result.stdout.strip()

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.splitlines()[0] if wrk_version else "?",
        "template_commit": git("rev-parse", "HEAD"),
        "template_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


@contextmanager
def scratch_directory(prefix: str, keep: bool) -> Iterator[Path]:
    """A new temporary directory for one run, removed afterwards unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if keep:
            log(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def require_wrk_and_postgres() -> None:
    """Stop with one line unless wrk is installed and PostgreSQL answers."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    problem = postgres_reachable()
    if problem:
        raise SystemExit(f"PostgreSQL is unreachable: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 pairs of 1 s runs")
    parser.add_argument("--pairs", type=int, help="override the alternated runs per side")
    parser.add_argument("--duration", type=float, help="override the seconds of each wrk run")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.pairs:
        plan = Plan(**{**asdict(plan), "pairs": args.pairs})
    if args.duration:
        plan = Plan(**{**asdict(plan), "duration_s": args.duration})
    require_wrk_and_postgres()

    started = time.monotonic()
    with scratch_directory("autocoder-bench-", args.keep) as work:
        info = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "plan": asdict(plan),
            "machine": machine(),
            "load_average_before": os.getloadavg(),
            "cookiecutter_mode": "CLI: cookiecutter --no-input -o DIR TEMPLATE blueprint=FILE",
        }
        log(f"baking {BLUEPRINT.name} into {work}")
        bench = Bench(plan, work)
        info["gunicorn_settings"] = bench.check_settings()
        info["unshipped_configs"] = [name for name, c in CONFIGS.items() if not c.shipped]
        bake = bench.bake_times()
        startup = bench.startup()
        bench.throughput()
        peer_results = peers.compare_all(bench)
        info["load_average_after"] = os.getloadavg()
        info["elapsed_s"] = round(time.monotonic() - started, 1)
        info["record_fields"] = bench.record_keys.get("generated")
        results = report.summarise(info, bench.samples, startup, bake, peer_results)
        paths = report.write(results, args.output)
        log("wrote " + ", ".join(str(path) for path in paths))
        print(report.markdown_table(results["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
