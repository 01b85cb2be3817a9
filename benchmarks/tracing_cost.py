"""python -m benchmarks.tracing_cost [--quick] [--before REV]: what tracing costs per request.

Three builds of the generated order_service, each in processes of its own (as a Gunicorn
worker: `import main`, so create_app() from the environment), driven by this process in
alternating batches:

- absent: baked from the template at REV, a commit without app/tracing.py (default: the
  parent of the commit that added it, or HEAD while it is not committed): no tracing at all;
- off: the working tree as shipped, OTEL_EXPORTER_OTLP_ENDPOINT unset;
- on: the working tree with the endpoint set, every span through the BatchSpanProcessor into
  the SDK's in-memory exporter (what an OTLP export adds, protobuf and HTTP on the exporter's
  thread, is not counted).

Per request: the WSGI app called in-process as Gunicorn calls it, then the JSON access line
(to /dev/null), which is all that tracing touches, without the network's noise. GET /health
(SQLite), GET /orders/<id> and POST /orders on SQLite and PostgreSQL. In each round every
side runs one batch, in an order that cycles through all six, each side's three processes
taking the rounds in turn (a build runs a few percent faster or slower in one process than in
another: one process per side would compare two such draws); the table gives each side's
median microseconds per request, and for off/absent and on/off the median of the rounds'
ratios with its 95% interval. Also per side: the OpenTelemetry modules a worker has loaded
once its app is made, and how long `import main` took.

Writes results/tracing_cost.{json,md} (not committed unless added). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/tracing_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import BIN_DIR, PostgresDatabase, postgres_reachable
from benchmarks.report import median_interval
from benchmarks.run import BLUEPRINT, RESULTS_DIR, TEMPLATE_DIR, cookiecutter_bake, log

SIDES = ("absent", "off", "on")
TRACING_MODULE = "{{cookiecutter.system_name}}/app/tracing.py"
SCENARIOS = {"sqlite": ("health", "get", "post"), "postgresql": ("get", "post")}
RATIOS = {"off / absent": ("off", "absent"), "on / off": ("on", "off")}
REPLY = "TRACING_COST "  # a runner's protocol lines start so; its logs go to stdout too
RUNNER_TIMEOUT_S = 120  # for any one answer of a runner


@dataclass(frozen=True)
class Plan:
    rounds: int
    batch: int  # requests per batch
    rows: int  # orders each side holds (GET reads ids 1..rows)
    # Processes per side, taking the rounds in turn: one and the same build runs a few percent
    # faster or slower in one process than in another (where its objects landed in memory),
    # so a single process per side would compare two draws of that, not two builds.
    processes: int


FULL = Plan(rounds=30, batch=200, rows=200, processes=3)
QUICK = Plan(rounds=6, batch=50, rows=50, processes=1)


# -- the runner: one side, in a process of its own -------------------------------------------


class _Response:
    """What Gunicorn's access logger reads of a response."""

    def __init__(self, status: str, headers: list) -> None:
        self.status = status
        self.headers = headers


class _Request:
    headers: list = []


def runner(spec: dict[str, Any]) -> None:
    """Make the side's app as a worker does, then answer batch requests on stdin."""
    from benchmarks.profile_hot_paths import Caller, scenario_calls

    project = Path(spec["project"])
    sys.path.insert(0, str(project))
    started = time.perf_counter()
    import main  # create_app() from the environment, as in a Gunicorn worker

    import_ms = (time.perf_counter() - started) * 1000
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
    app = main.app
    from app import migrate

    settings = app.config["SETTINGS"]
    migrate.upgrade(migrate.sqlalchemy_url(settings.database_url, settings.sqlite_path))
    exporter = None
    if spec["side"] == "on":
        from app import tracing
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        tracing.start(settings, exporter=exporter)  # as a worker's first request would

    from app.logs import JsonGunicornLogger
    from gunicorn.config import Config

    config = Config()
    config.set("accesslog", os.devnull)
    config.set("errorlog", os.devnull)
    access_log = JsonGunicornLogger(config)
    took = dt.timedelta(microseconds=1000)

    def access_line(environ: dict, status: str, headers: list) -> None:
        access_log.access(_Response(status, headers), _Request(), environ, took)

    caller = Caller(app, after=access_line)
    for _ in range(spec["rows"]):
        if caller.post_order() != 201:
            raise RuntimeError(f"{spec['side']}: seeding failed")
    calls = {name: scenario_calls(caller, name, spec["rows"]) for name in ("health", "get", "post")}
    _reply({"import_ms": import_ms, "opentelemetry_modules": len(loaded)})
    for line in sys.stdin:
        order = json.loads(line)
        call = calls[order["scenario"]]
        first = order["first"]
        started = time.perf_counter()
        for n in range(first, first + order["size"]):
            status = call(n)
            if status >= 300:
                raise RuntimeError(f"{spec['side']} {order['scenario']}: status {status}")
        us = (time.perf_counter() - started) / order["size"] * 1e6
        spans = 0
        if exporter is not None:
            assert tracing.flush()
            spans = len(exporter.get_finished_spans())
            exporter.clear()
        _reply({"us": us, "spans": spans})


def _reply(message: dict[str, Any]) -> None:
    print(REPLY + json.dumps(message), flush=True)


class Runner:
    """A side's process; batch() has it run one batch and answers microseconds per request."""

    def __init__(self, side: str, project: Path, work: Path, database_url: str, plan: Plan):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        (work / "prometheus").mkdir(parents=True, exist_ok=True)
        env.update(
            DATA_DIR=str(work / "data"),
            DATABASE_URL=database_url,
            MIGRATE_ON_START="false",  # migrated by the runner, before its app serves
            LOG_LEVEL="WARNING",
            # In process, as a Gunicorn worker runs it: gunicorn.conf.py gives every worker
            # a multiprocess directory.
            PROMETHEUS_MULTIPROC_DIR=str(work / "prometheus"),
        )
        if side == "on":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"  # never contacted
        spec = {"side": side, "project": str(project), "rows": plan.rows}
        self.side = side
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.tracing_cost", "--runner", json.dumps(spec)],
            cwd=TEMPLATE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started = self._answer()

    def _answer(self) -> dict[str, Any]:
        deadline = time.monotonic() + RUNNER_TIMEOUT_S
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.side}: runner exited {self.process.wait(5)}")
            if line.startswith(REPLY):
                return json.loads(line.removeprefix(REPLY))
        raise RuntimeError(f"{self.side}: no answer within {RUNNER_TIMEOUT_S} s")

    def batch(self, scenario: str, first: int, size: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        order = {"scenario": scenario, "first": first, "size": size}
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


# -- the builds -------------------------------------------------------------------------------


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=TEMPLATE_DIR, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def default_before() -> str:
    """The last commit without app/tracing.py: before the one that added it, else HEAD."""
    added = _git("log", "--diff-filter=A", "--format=%H", "-1", "--", TRACING_MODULE)
    return f"{added}^" if added else "HEAD"


def bake_before(rev: str, work: Path) -> Path:
    """The project baked from the template as it was at rev, by the cookiecutter command
    (its own generator, hooks and example blueprint)."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    template = work / "template-before"
    template.mkdir(parents=True)
    archive = work / "template-before.tar"
    _git("archive", "--format=tar", f"--output={archive}", commit)
    with tarfile.open(archive) as tar:
        tar.extractall(template, filter="data")
    if (template / TRACING_MODULE).exists():
        raise SystemExit(f"--before {rev} ({commit[:7]}) has app/tracing.py: it traces")
    output = work / "before"
    output.mkdir()
    blueprint = template / "examples" / "order_service.yaml"
    result = subprocess.run(
        [str(BIN_DIR / "cookiecutter"), "--no-input", str(template), f"blueprint={blueprint}"],
        cwd=output,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"baking {rev} failed: {result.stderr[-2000:]}")
    (project,) = [path for path in output.iterdir() if path.is_dir()]
    return project


# -- measuring ----------------------------------------------------------------------------------


def measure(runners: dict[str, list[Runner]], scenario: str, plan: Plan) -> dict[str, Any]:
    """Rounds of one batch per side, the order cycling through every permutation and each
    side's processes taking the rounds in turn."""
    orders = list(itertools.permutations(SIDES))
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    spans: dict[str, list[int]] = {side: [] for side in SIDES}
    first = 0
    for side in SIDES:  # warm-up: caches, connections
        for process in runners[side]:
            process.batch(scenario, first, plan.batch)
    for number in range(plan.rounds):
        first += plan.batch
        for side in orders[number % len(orders)]:
            answer = runners[side][number % plan.processes].batch(scenario, first, plan.batch)
            samples[side].append(answer["us"])
            spans[side].append(answer["spans"])
    result: dict[str, Any] = {
        "us": {side: statistics.median(values) for side, values in samples.items()},
        "samples_us": samples,
        "spans_per_request": {
            side: sum(counts) / (plan.rounds * plan.batch) for side, counts in spans.items()
        },
    }
    for name, (top, bottom) in RATIOS.items():
        ratios = [a / b for a, b in zip(samples[top], samples[bottom], strict=True)]
        result[name] = {"median": statistics.median(ratios), "interval": median_interval(ratios)}
    return result


def run(plan: Plan, before: str, work: Path) -> dict[str, Any]:
    now = Path(cookiecutter_bake(work / "now", {"blueprint": str(BLUEPRINT)}))
    log(f"baked the working tree: {now}")
    before_project = bake_before(before, work)
    log(f"baked {before} (no tracing): {before_project}")
    projects = {"absent": before_project, "off": now, "on": now}
    results: dict[str, Any] = {
        "before": f"{before} ({_git('rev-parse', '--short', f'{before}^{{commit}}')})",
        "plan": plan.__dict__,
        "measures": {},
        "workers": {},
    }
    for backend, scenarios in SCENARIOS.items():
        with ExitStack() as stack:
            runners: dict[str, list[Runner]] = {side: [] for side in SIDES}
            for number, side in itertools.product(range(plan.processes), SIDES):
                url = ""
                if backend == "postgresql":
                    url = stack.enter_context(PostgresDatabase()).url
                side_work = work / "runs" / f"{backend}-{side}-{number}"
                runner_ = Runner(side, projects[side], side_work, url, plan)
                stack.callback(runner_.close)
                runners[side].append(runner_)
            results["workers"][backend] = {side: runners[side][0].started for side in SIDES}
            for scenario in scenarios:
                key = f"{scenario}/{backend}"
                results["measures"][key] = measured = measure(runners, scenario, plan)
                log(f"{key}: " + _line(measured))
    return results


def _line(measured: dict[str, Any]) -> str:
    us = ", ".join(f"{side} {measured['us'][side]:.1f} us" for side in SIDES)
    ratios = ", ".join(f"{name} {measured[name]['median']:.3f}" for name in RATIOS)
    return f"{us}; {ratios}"


def _interval(value: dict[str, Any]) -> str:
    interval = value["interval"]
    return "-" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"


def markdown(results: dict[str, Any]) -> str:
    plan = results["plan"]
    lines = [
        "# Tracing: cost per request",
        "",
        f"`python -m benchmarks.tracing_cost`, {results['date']}, {os.cpu_count()} CPUs; "
        f"absent = the template at {results['before']}; {plan['rounds']} rounds of "
        f"{plan['batch']} requests per side, taken in turn by {plan['processes']} processes "
        "per side, in process (WSGI app + JSON access line).",
        "",
        "| path | absent | off | on (in-memory exporter) | off / absent | 95% interval "
        "| on / off | 95% interval | spans per request (on) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for key, m in results["measures"].items():
        us = " | ".join(f"{m['us'][side]:.1f} us" for side in SIDES)
        off, on = m["off / absent"], m["on / off"]
        lines.append(
            f"| {key} | {us} | {off['median']:.3f} | {_interval(off)} | {on['median']:.3f} "
            f"| {_interval(on)} | {m['spans_per_request']['on']:.1f} |"
        )
    lines += ["", "A worker once its app is made (`import main`):", ""]
    for backend, sides in results["workers"].items():
        parts = ", ".join(
            f"{side}: {value['opentelemetry_modules']} OpenTelemetry modules, "
            f"{value['import_ms']:.0f} ms"
            for side, value in sides.items()
        )
        lines.append(f"- {backend}: {parts}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_cost")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller batches")
    parser.add_argument("--before", help="a commit without tracing (default: see the docstring)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    parser.add_argument("--runner", help=argparse.SUPPRESS)  # a side's process (internal)
    args = parser.parse_args(argv)
    if args.runner:
        runner(json.loads(args.runner))
        return 0
    problem = postgres_reachable()
    if problem:
        raise SystemExit(f"PostgreSQL is unreachable: {problem}")
    work = Path(tempfile.mkdtemp(prefix="autocoder-tracing-cost-"))
    try:
        results = run(QUICK if args.quick else FULL, args.before or default_before(), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "tracing_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.output / "tracing_cost.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
