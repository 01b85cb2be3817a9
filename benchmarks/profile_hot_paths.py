"""Where the generated service's time goes, relative to the hand-written baselines.

python -m benchmarks.profile_hot_paths [--quick] [--py-spy]

1. In-process cost per request of each WSGI app (no Gunicorn, no network): generated vs
   baseline for GET /health, GET /orders/<id> and POST /orders, on SQLite and PostgreSQL.
   Batches of the two apps alternate; medians of the per-batch cost.
2. Ablation: the generated app with one feature at a time switched off by monkeypatching this
   process only (the template is not touched), which prices each feature.
3. The Gunicorn access logger per request: the generated JsonGunicornLogger vs Gunicorn's own.
4. pyinstrument profiles of the generated app per path (results/profile/pyinstrument-*.txt).
5. With --py-spy: py-spy samples the GIL-holding thread of each Gunicorn worker of both services
   under wrk load (gthread, SQLite) and splits the samples into buckets
   (results/profile/py-spy-*.txt).

Writes results/profile/summary.md and summary.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import BENCH_DIR, BIN_DIR, PostgresDatabase, Server, ServerSpec, wrk
from benchmarks.run import BLUEPRINT, RESULTS_DIR, cookiecutter_bake

WsgiApp = Callable[[dict, Callable], Any]
EMAILS = itertools.count(1)  # unique emails across every caller of this process


class Caller:
    """Calls a WSGI app the way Gunicorn does, with a prebuilt environ; returns the status.
    `after(environ, status, headers)`, if given, runs once the body is consumed, as Gunicorn
    writes its access line then."""

    def __init__(self, app: WsgiApp, after: Callable[[dict, str, list], Any] | None = None) -> None:
        self.app = app
        self.after = after

    def __call__(self, method: str, path: str, body: bytes = b"") -> int:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "RAW_URI": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8080",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if body:
            environ["CONTENT_TYPE"] = "application/json"
            environ["CONTENT_LENGTH"] = str(len(body))
        statuses = []
        result = self.app(environ, lambda *answer: statuses.append(answer))
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
        status, headers = statuses[0][:2]
        if self.after is not None:
            self.after(environ, status, headers)
        return int(status[:3])

    def post_order(self) -> int:
        body = f'{{"customer": "bench", "email": "p{os.getpid()}-{next(EMAILS)}@x"}}'
        return self("POST", "/orders", body.encode())


def scenario_calls(caller: Caller, scenario: str, rows: int) -> Callable[[int], int]:
    """A function of the request number that makes one request of the scenario."""
    if scenario == "health":
        return lambda n: caller("GET", "/health")
    if scenario == "get":
        return lambda n: caller("GET", f"/orders/{n % rows + 1}")
    return lambda n: caller.post_order()


def per_request_us(calls: dict[str, Callable[[int], int]], batches: int, size: int) -> dict:
    """{name: median microseconds per request}, the named callables' batches alternating."""
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for batch in range(batches):
        names = list(calls) if batch % 2 == 0 else list(calls)[::-1]
        for name in names:
            call = calls[name]
            started = time.perf_counter()
            for n in range(batch * size, (batch + 1) * size):
                status = call(n)
                if status >= 300:
                    raise RuntimeError(f"{name}: status {status}")
            timings[name].append((time.perf_counter() - started) / size * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


# -- the apps ---------------------------------------------------------------------------------


class Apps:
    """The generated app and the baselines, created in this process for one backend."""

    def __init__(self, project: Path, work: Path, database_url: str | None, rows: int) -> None:
        self.project = project
        self.rows = rows
        data_dir = work / "data"
        environ = {
            "DATA_DIR": str(data_dir / "generated"),
            "DATABASE_URL": database_url or "",
            # In process, as a Gunicorn worker runs it: gunicorn.conf.py gives every worker
            # a multiprocess directory, and this profile has no gunicorn.conf.py.
            "PROMETHEUS_MULTIPROC_DIR": str(work / "prometheus"),
            "LOG_LEVEL": "WARNING",  # quieter logs keep the profile on the request path
        }
        os.environ.update(environ)
        (work / "prometheus").mkdir(parents=True, exist_ok=True)
        for path in (str(project), str(BENCH_DIR / "baselines")):
            if path not in sys.path:
                sys.path.insert(0, path)
        import health_app
        import orders_app
        from app import create_app

        self.generated = create_app(environ={**os.environ, **environ})
        os.environ["DATA_DIR"] = str(data_dir / "baseline")
        self.health_baseline = health_app.app
        self.orders_baseline = orders_app.create_app()
        for app in (self.generated, self.orders_baseline):
            caller = Caller(app)
            for _ in range(rows):
                if caller.post_order() != 201:
                    raise RuntimeError("seeding failed")

    def callers(self, scenario: str, generated: WsgiApp | None = None) -> dict:
        baseline = self.health_baseline if scenario == "health" else self.orders_baseline
        return {
            "generated": scenario_calls(Caller(generated or self.generated), scenario, self.rows),
            "baseline": scenario_calls(Caller(baseline), scenario, self.rows),
        }


# -- ablations: one feature of the generated app off at a time -----------------------------------


@contextmanager
def without_middleware(app: Any, name: str) -> Iterator[None]:
    """The app with the WSGI middleware class `name` spliced out of app.wsgi_app's chain."""
    holder, layer = app, app.wsgi_app
    while type(layer).__name__ != name:
        holder, layer = layer, layer.wsgi_app  # each middleware keeps the app it wraps there
    holder.wsgi_app = layer.wsgi_app
    try:
        yield
    finally:
        holder.wsgi_app = layer


@contextmanager
def without_metrics(app: Any) -> Iterator[None]:
    """Without the request metrics: their middleware and the request class that feeds it."""
    from flask import Request

    request_class = app.request_class
    app.request_class = Request
    try:
        with without_middleware(app, "RequestMetrics"):
            yield
    finally:
        app.request_class = request_class


@contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


# Stand-ins for Database.run: the bare minimum a hand-written store does, to price what the
# generated run() adds around the statement.


def _sqlite_lean_run(self, work, **options):
    """SqliteDatabase.run as a bare autocommit statement: no BEGIN/COMMIT, no progress handler."""
    cursor = self._thread().connection.cursor()
    try:
        return work(cursor)
    finally:
        cursor.close()


def _postgres_lean_run(self, work, **options):
    """PostgresDatabase.run as a bare autocommit statement: no BEGIN/COMMIT, no error mapping."""
    pool = self._pool.get()
    connection = pool.take()
    try:
        with connection.cursor() as cursor:  # pooled connections are in autocommit
            return work(cursor)
    finally:
        pool.give_back(connection)


def ablations(apps: Apps, backend: str) -> dict[str, Callable[[], Any]]:
    """{name: context manager factory} of the generated app with one thing switched off."""
    from app import validation
    from app.persistence import postgres, sqlite

    app = apps.generated
    result: dict[str, Callable[[], Any]] = {
        "no request metrics": lambda: without_metrics(app),
        "no request id / security headers": lambda: without_middleware(
            app, "RequestIdAndSecurityHeaders"
        ),
        "no JSON Schema validation": lambda: patched(
            validation.BodyValidator, "errors", lambda self, body: []
        ),
    }
    if backend == "sqlite":
        result["SQLite: bare statement (no BEGIN/COMMIT, no statement timeout)"] = lambda: patched(
            sqlite.SqliteDatabase, "run", _sqlite_lean_run
        )
    else:
        result["PostgreSQL: bare statement (autocommit, no error mapping, no watchdog)"] = lambda: (
            patched(postgres.PostgresDatabase, "run", _postgres_lean_run)
        )

    parts = list(result.values())

    def everything() -> Any:
        stack = ExitStack()
        for factory in parts:
            stack.enter_context(factory())
        return stack

    result["all of the above"] = everything
    return result


def ablation_costs(apps: Apps, backend: str, scenario: str, batches: int, size: int) -> dict:
    """{feature: microseconds per request it costs} (full minus feature-off, same batches)."""
    rows = apps.rows
    full = Caller(apps.generated)
    costs = {}
    for name, factory in ablations(apps, backend).items():
        if scenario == "health" and name.startswith(("SQLite", "PostgreSQL", "no JSON")):
            continue
        if scenario == "get" and name == "no JSON Schema validation":
            continue
        lean_caller = Caller(apps.generated)
        lean_call = scenario_calls(lean_caller, scenario, rows)
        full_call = scenario_calls(full, scenario, rows)
        timings: dict[str, list[float]] = {"full": [], "lean": []}
        for batch in range(batches):
            for variant in ("full", "lean") if batch % 2 == 0 else ("lean", "full"):
                with factory() if variant == "lean" else ExitStack():
                    call = lean_call if variant == "lean" else full_call
                    started = time.perf_counter()
                    for n in range(batch * size, (batch + 1) * size):
                        status = call(n)
                        if status >= 300:
                            raise RuntimeError(f"{name} ({variant}): status {status}")
                    timings[variant].append((time.perf_counter() - started) / size * 1e6)
        costs[name] = statistics.median(timings["full"]) - statistics.median(timings["lean"])
    return costs


# -- Gunicorn's access logger --------------------------------------------------------------------


def access_logger_costs(project: Path, calls: int) -> dict[str, float]:
    """Microseconds per access-log line: generated JSON logger vs Gunicorn's default."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    from app.logs import JsonGunicornLogger

    class Response:
        status = "200 OK"
        sent = 16
        response_length = 16
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", "16"),
            ("X-Request-ID", "0123456789abcdef0123456789abcdef"),
        ]

    class Request:
        headers = [("HOST", "127.0.0.1:8080")]

    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/orders/1",
        "PATH_INFO": "/orders/1",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8080",
    }
    results = {}
    for name, logger_class in (("generated JSON", JsonGunicornLogger), ("Gunicorn", Logger)):
        cfg = Config()
        cfg.set("accesslog", os.devnull)
        cfg.set("errorlog", os.devnull)
        logger = logger_class(cfg)
        request_time = dt.timedelta(microseconds=1234)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                logger.access(Response(), Request(), environ, request_time)
            timings.append((time.perf_counter() - started) / calls * 1e6)
        results[name] = statistics.median(timings)
    return results


# -- pyinstrument ------------------------------------------------------------------------------


def pyinstrument_profile(call: Callable[[int], int], requests: int, path: Path) -> list:
    """Profile `requests` calls; write the call tree; return the top functions by self time."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002)
    profiler.start()
    for n in range(requests):
        call(n)
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=True)
    path.write_text(text, encoding="utf-8")
    self_time: Counter[str] = Counter()
    stack = [profiler.last_session.root_frame()]
    total = 0.0
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic:  # "[self]" frames repeat their parent's self time
            continue
        where = f"{_short_path(frame.file_path or '')}:{frame.function}"
        self_time[where] += frame.total_self_time
        total += frame.total_self_time
    return [(where, seconds / total) for where, seconds in self_time.most_common(15)]


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/order_service/", "/baselines/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# -- py-spy under load ---------------------------------------------------------------------------

# A sample counts for the first feature with a frame anywhere in its stack (inclusive cost);
# failing that, for the bucket of the frame nearest the leaf among the WSGI middleware (which
# wrap every request, so only their own frames and the libraries they call count as theirs)
# and the generic buckets. Frames read "function (file:line)".
FEATURES = [
    ("access log line (Gunicorn's logger)", ["glogging.py"]),
    ("access log line (generated JSON logger)", ["app/logs.py"]),
    ("body validation", ["app/validation.py", "order_errors (orders_app.py"]),
    (
        "database: store, driver, SQL, row conversion",
        [
            "app/persistence/",
            "_one (orders_app.py",
            "get (orders_app.py",
            "create (orders_app.py",
            "_connection (orders_app.py",
        ],
    ),
]
NEAREST_LEAF = [
    ("request metrics", ["app/metrics.py", "prometheus_flask_exporter", "prometheus_client"]),
    ("request id / security headers", ["app/middleware.py"]),
    ("stdlib json", ["json/"]),
    ("logging module (error log, app log)", ["logging/"]),
    ("Flask / Werkzeug", ["flask/", "werkzeug/"]),
    ("Gunicorn: HTTP parsing, sockets, worker loop", ["gunicorn/"]),
]


def classify(stack: str) -> str:
    for bucket, markers in FEATURES:
        if any(marker in stack for marker in markers):
            return bucket
    for frame in stack.split(";")[::-1]:  # leaf first
        for bucket, markers in NEAREST_LEAF:
            if any(marker in frame for marker in markers):
                return bucket
    return "other"


RATE = 250  # py-spy samples per second


def py_spy_under_load(project: Path, work: Path, duration: float, out_dir: Path) -> dict:
    """Sample both services' workers while wrk drives them (gthread, SQLite)."""
    results: dict[str, Any] = {}
    for scenario in ("health", "get", "post"):
        for side in ("baseline", "generated"):
            run_dir = work / f"py-spy-{scenario}-{side}"
            env = {  # a deployment's choices; every other setting is the shipped default
                "WEB_CONCURRENCY": "2",
                "DATA_DIR": str(run_dir / "data"),
                "DATABASE_URL": "",
            }
            if side == "generated":
                spec = ServerSpec("generated", project, "main:app", env)
            else:
                app = "health_app:app" if scenario == "health" else "orders_app:app"
                spec = ServerSpec("baseline", BENCH_DIR / "baselines", app, env)
            with Server(spec, run_dir) as server:
                server.start()
                args: list[str] = []
                url = f"{server.url}/health"
                if scenario != "health":
                    from benchmarks.harness import seed_orders

                    seed_orders(server.port, 1000, run_dir / "data", None)
                    url = server.url
                    args = ["1000"] if scenario == "get" else ["pyspy-{attempt}"]
                wrk(url, f"{scenario}.lua", 1, *(["warm"] if scenario == "post" else args))
                raw = out_dir / f"py-spy-{scenario}-{side}.txt"
                spy = subprocess.Popen(
                    [
                        str(BIN_DIR / "py-spy"),
                        "record",
                        "--pid",
                        str(server.process.pid),
                        "--subprocesses",
                        "--rate",
                        str(RATE),
                        "--duration",
                        str(int(duration)),
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--nonblocking",
                        "--gil",  # samples of the thread holding the GIL: the CPU that counts
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                load = wrk(url, f"{scenario}.lua", duration + 1, *args, spread_over=server)
                spy.wait(timeout=duration + 30)
            buckets: Counter[str] = Counter()
            for line in raw.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if "arbiter.py" in stack:  # the master process
                    continue
                buckets[classify(stack)] += int(count)
            # GIL-holding worker time per request, from samples at RATE Hz over the run.
            requests = load.rps * duration
            results[f"{scenario}/{side}"] = {
                "rps": load.rps,
                "samples": sum(buckets.values()),
                "us_per_request": {k: v / RATE / requests * 1e6 for k, v in buckets.most_common()},
            }
    return results


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_hot_paths")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller batches")
    parser.add_argument("--py-spy", action="store_true", help="also sample workers under load")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "profile")
    args = parser.parse_args(argv)
    batches, size = (4, 100) if args.quick else (10, 300)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="autocoder-profile-"))
    try:
        profile(args, work, batches, size, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def profile(args: argparse.Namespace, work: Path, batches: int, size: int, out: Path) -> None:
    project = Path(cookiecutter_bake(work / "generated", {"blueprint": str(BLUEPRINT)}))
    report: dict[str, Any] = {"per_request_us": {}, "ablation_us": {}, "top_self_time": {}}
    report["startup"] = startup_breakdown(project)
    print("start-up", json.dumps(report["startup"], indent=1), flush=True)
    with ExitStack() as stack:
        database = stack.enter_context(PostgresDatabase())
        for backend, url in (("sqlite", None), ("postgresql", database.url)):
            apps = Apps(project, work / backend, url, rows=200)
            for scenario in ("health", "get", "post"):
                if scenario == "health" and backend != "sqlite":
                    continue
                key = f"{scenario}/{backend}"
                costs = per_request_us(apps.callers(scenario), batches, size)
                report["per_request_us"][key] = costs
                report["ablation_us"][key] = ablation_costs(apps, backend, scenario, batches, size)
                print(key, {k: round(v, 1) for k, v in costs.items()}, flush=True)
                print("   ", {k: round(v, 1) for k, v in report["ablation_us"][key].items()})
                call = scenario_calls(Caller(apps.generated), scenario, apps.rows)
                report["top_self_time"][key] = pyinstrument_profile(
                    call, batches * size, out / f"pyinstrument-{scenario}-{backend}.txt"
                )
    report["access_log_us"] = access_logger_costs(project, 2000 if args.quick else 20000)
    print("access log", report["access_log_us"], flush=True)
    if args.py_spy:
        report["py_spy"] = py_spy_under_load(project, work, 4 if args.quick else 8, out)
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(report), encoding="utf-8")
    print((out / "summary.md").read_text())


# -- start-up ------------------------------------------------------------------------------------

IMPORT_PROBE = """
import sys, time
started = time.perf_counter()
import {module}
print(round((time.perf_counter() - started) * 1000, 1))
"""


def startup_breakdown(project: Path, repetitions: int = 5) -> dict[str, Any]:
    """What a worker does before its first request: import the WSGI module (which, for the
    generated service, also runs create_app()). Median wall ms, and import time (python -X
    importtime, self time) summed by top-level package."""
    result: dict[str, Any] = {}
    for name, directory, module in (
        ("generated main (imports + create_app)", project, "main"),
        ("baseline health_app", BENCH_DIR / "baselines", "health_app"),
    ):
        env = {**os.environ, "DATA_DIR": tempfile.mkdtemp(), "LOG_LEVEL": "WARNING"}
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()  # as gunicorn.conf.py gives workers
        times = []
        for _ in range(repetitions):
            probe = subprocess.run(
                [sys.executable, "-c", IMPORT_PROBE.format(module=module)],
                cwd=directory,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            times.append(float(probe.stdout.split()[-1]))
        traced = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        # Self time summed by top-level package: no double counting of nested imports.
        by_package: Counter[str] = Counter()
        for line in traced.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            own, _, package = line.removeprefix("import time:").split("|")
            by_package[package.strip().split(".")[0]] += int(own) / 1000
        result[name] = {
            "import_ms_median": statistics.median(times),
            "top_imports_ms": [(k, round(v, 1)) for k, v in by_package.most_common(12)],
        }
    return result


def summary_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Profile: generated service vs baselines",
        "",
        "## In-process cost per request (WSGI app only, microseconds, median of batches)",
        "",
        "| path | generated | baseline | extra |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, costs in report["per_request_us"].items():
        g, b = costs["generated"], costs["baseline"]
        lines.append(f"| {key} | {g:.0f} | {b:.0f} | {g - b:+.0f} |")
    lines += ["", "## What each feature of the generated app costs (us per request)", ""]
    for key, costs in report["ablation_us"].items():
        parts = ", ".join(f"{name}: {value:.0f}" for name, value in costs.items())
        lines.append(f"- {key}: {parts}")
    lines += ["", "## Start-up: importing the WSGI module in a fresh interpreter", ""]
    for name, value in report["startup"].items():
        top = ", ".join(f"{package} {ms:.0f}" for package, ms in value["top_imports_ms"][:10])
        lines.append(f"- {name}: {value['import_ms_median']:.0f} ms; import ms by package: {top}")
    logs = report["access_log_us"]
    lines += [
        "",
        "## Gunicorn access log line (us per request)",
        "",
        ", ".join(f"{name}: {value:.1f}" for name, value in logs.items()),
        "",
        "## Top self time in the generated app (pyinstrument, share of samples)",
        "",
    ]
    for key, top in report["top_self_time"].items():
        lines.append(f"- {key}: " + "; ".join(f"{w} {s:.0%}" for w, s in top[:8]))
    if "py_spy" in report:
        lines += ["", "## Worker samples under wrk load (py-spy, gthread, SQLite)", ""]
        lines.append("GIL-holding worker time per request (us), by where it is spent:")
        lines.append("")
        for key, value in report["py_spy"].items():
            buckets = "; ".join(f"{k} {v:.0f}" for k, v in value["us_per_request"].items())
            total = sum(value["us_per_request"].values())
            lines.append(f"- {key} ({value['rps']:.0f} rps, {total:.0f} us): {buckets}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
