"""Bake every supported blueprint and check the result the way a user would: lint it, run its
own tests (SQLite and PostgreSQL), lint its Dockerfile, and look for leftovers and secrets."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES_DIR, SEED_BLUEPRINT, TEMPLATE_DIR, bake
from generated_blueprints import large_blueprint

from blueprint_schema.model import CREDENTIAL_IN_TEXT
from service_validator.static_checks import run_tool

BIN = Path(sys.executable).parent
UNRENDERED = re.compile(r"\{\{\s*cookiecutter|\{%-?\s|\s-?%\}")
SEED_PASSWORD = "test123"


def _large_blueprint_file(directory: Path) -> Path:
    path = directory / "large_system.yaml"
    path.write_text(yaml.safe_dump(large_blueprint(50)), encoding="utf-8")
    return path


BLUEPRINTS = {
    "order_service": lambda _: EXAMPLES_DIR / "order_service.yaml",
    "library": lambda _: EXAMPLES_DIR / "library.yaml",
    "phase8_test_api": lambda _: SEED_BLUEPRINT,
    "large_system": _large_blueprint_file,
}


@pytest.fixture(scope="module", params=sorted(BLUEPRINTS))
def baked(request, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp(request.param)
    blueprint = BLUEPRINTS[request.param](directory)
    project = bake(directory / "out", blueprint=str(blueprint))
    assert project.name == request.param
    return project


def project_files(project: Path) -> list[Path]:
    return [path for path in project.rglob("*") if path.is_file()]


def test_nothing_is_left_unrendered(baked):
    leftovers = [
        str(path.relative_to(baked))
        for path in project_files(baked)
        if UNRENDERED.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert leftovers == []
    assert not [p for p in baked.rglob("*") if "{{" in p.name or "cookiecutter" in p.name]


def test_no_secret_in_any_file(baked):
    for path in project_files(baked):
        text = path.read_text(encoding="utf-8", errors="replace")
        assert SEED_PASSWORD not in text, path
        assert not CREDENTIAL_IN_TEXT.search(text), path


def assert_ruff_clean(directory: Path) -> None:
    """`ruff check` and `ruff format --check` pass in directory, under its own settings."""
    check = run_tool([str(BIN / "ruff"), "check", "--no-cache", "."], directory)
    assert check.returncode == 0, check.stdout
    formatted = run_tool([str(BIN / "ruff"), "format", "--no-cache", "--check", "."], directory)
    assert formatted.returncode == 0, formatted.stdout


def test_ruff_is_clean(baked):
    assert_ruff_clean(baked)


def test_dockerfile_passes_hadolint(baked):
    result = run_tool([str(BIN / "hadolint"), "Dockerfile"], baked)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (baked / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)


def test_own_tests_pass_on_sqlite(baked):
    result = run_tool([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], baked)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)


def test_own_tests_pass_on_postgresql(baked, postgres_server_url):
    result = run_tool(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        baked,
        env={"TEST_DATABASE_URL": postgres_server_url},
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)


def test_generated_python_compiles(baked):
    result = run_tool([sys.executable, "-m", "compileall", "-q", "app", "tests", "main.py"], baked)
    assert result.returncode == 0, result.stdout


def test_template_dir_holds_no_build_leftovers():
    """Cookiecutter would try to render caches left inside the template directory."""
    project_template = TEMPLATE_DIR / "{{cookiecutter.system_name}}"
    leftovers = [p for p in project_template.rglob("*") if p.name in ("__pycache__", ".ruff_cache")]
    assert leftovers == []


def test_ruff_at_the_repository_root_is_clean_and_leaves_the_template_alone():
    """`ruff check .` in this repository must not reach into the project template: it would
    lint it under the template's own settings and leave a .ruff_cache there, which
    cookiecutter then fails to render."""
    listed = run_tool([str(BIN / "ruff"), "check", "--no-cache", "--show-files", "."], TEMPLATE_DIR)
    files = listed.stdout.splitlines()
    assert any(line.endswith("model.py") for line in files), listed.stdout[-2000:]
    assert [line for line in files if "{{cookiecutter.system_name}}" in line] == []
    assert_ruff_clean(TEMPLATE_DIR)
