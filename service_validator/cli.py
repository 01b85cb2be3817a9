"""`autocoder-validate PROJECT`: is a generated service fit to deploy? Checked by running it.

Static checks run its tools; dynamic checks serve it under Gunicorn (2 workers) on a free
loopback port, on SQLite unless --database-url is given, and talk to it over HTTP.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

from . import dynamic_checks, static_checks
from .report import Passed, Run
from .server import GunicornServer

STATIC = (
    "ruff",
    "hadolint",
    "dockerfile-non-root",
    "gunicorn-check-config",
    "bandit",
    "no-secrets",
    "routes-match-openapi",
)
DYNAMIC = (
    "health-ready",
    "openapi-valid",
    "crud-round-trip",
    "schemathesis",
    "load",
    "metrics-count",
    "graceful-shutdown",
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autocoder-validate", description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="directory of a generated service")
    parser.add_argument(
        "--database-url", help="serve on this PostgreSQL database (default: SQLite)"
    )
    parser.add_argument(
        "--report", type=Path, help="JSON report path (default: PROJECT/validation.json)"
    )
    parser.add_argument(
        "--load-seconds", type=int, default=10, help="load test duration (default 10)"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="load test connections (default 32)"
    )
    parser.add_argument(
        "--examples", type=int, default=25, help="schemathesis examples per operation"
    )
    parser.add_argument("--seed", type=int, default=20261124, help="schemathesis seed")
    parser.add_argument(
        "--only",
        help="comma-separated checks to run: " + ", ".join(STATIC + DYNAMIC),
    )
    return parser.parse_args(argv)


def _static(run: Run, project: Path) -> None:
    run.check("static", "ruff", lambda: static_checks.ruff(project))
    run.check("static", "hadolint", lambda: static_checks.hadolint(project))
    run.check("static", "dockerfile-non-root", lambda: static_checks.dockerfile_non_root(project))
    run.check("static", "gunicorn-check-config", lambda: static_checks.gunicorn_config(project))
    run.check("static", "bandit", lambda: static_checks.bandit(project))
    run.check("static", "no-secrets", lambda: static_checks.no_secrets(project))
    run.check("static", "routes-match-openapi", lambda: static_checks.routes_match_openapi(project))


def _dynamic(run: Run, project: Path, arguments: argparse.Namespace, work: Path) -> None:
    if not any(run.wanted(name) for name in DYNAMIC):
        return
    api_key = secrets.token_hex(16)
    headers = {"X-API-Key": api_key}
    env = {"API_KEYS": api_key}
    if arguments.database_url:
        env["DATABASE_URL"] = arguments.database_url
    graceful_timeout = float(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
    drain_seconds = float(os.environ.get("DRAIN_SECONDS", "5"))
    server = GunicornServer(project, work / "server", env)
    started = run.check("dynamic", "start", lambda: _start(server), always=True)
    if started is None or not started.passed:
        return
    try:
        document: dict = {}

        def openapi() -> Passed:
            passed, loaded = dynamic_checks.openapi_valid(server)
            document.update(loaded)
            return passed

        run.check("dynamic", "health-ready", lambda: dynamic_checks.health_and_ready(server))
        run.check("dynamic", "openapi-valid", openapi)
        if not document:
            document.update(dynamic_checks.http("GET", f"{server.url}/openapi.json").json())
        run.check(
            "dynamic",
            "crud-round-trip",
            lambda: dynamic_checks.crud_round_trip(server, document, headers),
        )
        run.check(
            "dynamic",
            "schemathesis",
            lambda: dynamic_checks.schemathesis_run(
                server, headers, arguments.examples, arguments.seed, work
            ),
        )
        run.check(
            "dynamic",
            "load",
            lambda: dynamic_checks.load(
                server, document, headers, arguments.load_seconds, arguments.connections
            ),
        )
        run.check("dynamic", "metrics-count", lambda: dynamic_checks.metrics_count(server))
        run.check(
            "dynamic",
            "graceful-shutdown",
            lambda: dynamic_checks.graceful_shutdown(server, graceful_timeout, drain_seconds),
        )
    finally:
        server.stop()


def _start(server: GunicornServer) -> Passed:
    server.start()
    return Passed(f"gunicorn (2 workers) answers /health at {server.url}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    project = arguments.project.resolve()
    if not (project / "main.py").is_file() or not (project / "gunicorn.conf.py").is_file():
        print(
            f"error: {project} is not a generated service (no main.py and gunicorn.conf.py)",
            file=sys.stderr,
        )
        return 2
    only = set(arguments.only.split(",")) if arguments.only else None
    unknown = (only or set()) - set(STATIC + DYNAMIC)
    if unknown:
        print(f"error: unknown check(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    run = Run(only)
    print(f"validating {project}", flush=True)
    with tempfile.TemporaryDirectory(prefix="validate-") as work:
        _static(run, project)
        _dynamic(run, project, arguments, Path(work))
    print()
    print(run.table())
    report = arguments.report or project / "validation.json"
    run.write_json(report, project)
    print(f"report: {report}")
    passed, total = run.score
    return 0 if passed == total and total else 1
