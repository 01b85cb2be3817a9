"""autocoder-validate: passes on good projects, fails naming the check on broken ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES_DIR, SEED_BLUEPRINT, bake

pytestmark = pytest.mark.slow  # real servers under load, faults, scenario runs

FAST = ["--load-seconds", "2", "--connections", "32", "--examples", "10"]


def validate(project: Path, report: Path, *arguments: str) -> tuple[int, dict, str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service_validator",
            str(project),
            "--report",
            str(report),
            *FAST,
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    return result.returncode, json.loads(report.read_text()), result.stdout


def outcomes(report: dict) -> dict[str, bool]:
    return {check["name"]: check["passed"] for check in report["checks"]}


@pytest.mark.parametrize(
    "blueprint",
    [EXAMPLES_DIR / "order_service.yaml", EXAMPLES_DIR / "library.yaml", SEED_BLUEPRINT],
    ids=["order_service", "library", "legacy_seed"],
)
def test_generated_projects_pass_every_check(tmp_path, blueprint):
    project = bake(tmp_path / "out", blueprint=str(blueprint))
    code, report, stdout = validate(project, tmp_path / "report.json")
    assert code == 0, stdout
    assert report["passed"] == report["total"] == 15
    assert "score: 15/15" in stdout
    measured = {check["name"]: check["measurements"] for check in report["checks"]}
    assert measured["metrics-count"]["sent"] == measured["metrics-count"]["counted"]
    assert measured["load"]["/health"]["requests"] > 0
    assert measured["graceful-shutdown"]["lost_after_received"] == 0


def test_passes_on_postgresql(tmp_path, postgres_database):
    project = bake(tmp_path / "out", blueprint=str(EXAMPLES_DIR / "order_service.yaml"))
    code, report, stdout = validate(
        project, tmp_path / "report.json", "--database-url", postgres_database
    )
    assert code == 0, stdout
    assert report["passed"] == report["total"]


@pytest.fixture
def project(tmp_path) -> Path:
    return bake(tmp_path / "out", blueprint=str(EXAMPLES_DIR / "order_service.yaml"))


def _break(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_dockerfile_running_as_root_fails(project, tmp_path):
    _break(project / "Dockerfile", "USER 10001:10001", "USER root")
    code, report, _ = validate(
        project, tmp_path / "r.json", "--only", "hadolint,dockerfile-non-root"
    )
    assert code == 1
    assert outcomes(report) == {"hadolint": False, "dockerfile-non-root": False}
    evidence = {check["name"]: check["evidence"] for check in report["checks"]}
    assert "DL3002" in evidence["hadolint"]
    assert "root" in evidence["dockerfile-non-root"]


def test_ready_answering_500_fails(project, tmp_path):
    _break(
        project / "app" / "service.py",
        '    timeout_ms = current_app.config["SETTINGS"].ready_timeout_ms\n',
        '    raise RuntimeError("broken on purpose")\n',
    )
    code, report, _ = validate(project, tmp_path / "r.json", "--only", "health-ready,openapi-valid")
    assert code == 1
    assert outcomes(report) == {"start": True, "health-ready": False, "openapi-valid": True}
    assert "/ready 500" in report["checks"][1]["evidence"]


def test_route_missing_from_openapi_fails(project, tmp_path):
    custom = project / "app" / "custom" / "orders_api.py"
    docstring = (
        '    """Add the endpoint\'s own routes or request hooks here'
        ' (routes is a Flask Blueprint)."""\n'
    )
    _break(
        custom,
        docstring,
        docstring + '    routes.add_url_rule("/orders/export", "export", lambda: {"rows": []})\n',
    )
    code, report, _ = validate(project, tmp_path / "r.json", "--only", "routes-match-openapi")
    assert code == 1
    assert outcomes(report) == {"routes-match-openapi": False}
    assert "served but not documented: GET /orders/export" in report["checks"][0]["evidence"]


def test_handler_that_raises_fails(project, tmp_path):
    _break(
        project / "app" / "custom" / "orders.py",
        "    return record\n",
        '    raise RuntimeError("a bug in custom code")\n',
    )
    code, report, _ = validate(
        project, tmp_path / "r.json", "--only", "crud-round-trip,schemathesis,health-ready"
    )
    assert code == 1
    assert outcomes(report) == {
        "start": True,
        "health-ready": True,
        "crud-round-trip": False,
        "schemathesis": False,
    }
    evidence = {check["name"]: check["evidence"] for check in report["checks"]}
    assert "answered 500" in evidence["crud-round-trip"]
    assert "ST101 Server error" in evidence["schemathesis"]
