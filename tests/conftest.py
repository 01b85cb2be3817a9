"""Shared fixtures of the template's tests: baking, PostgreSQL, free ports, live servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = TEMPLATE_DIR / "examples"
# The legacy autocoder's blueprint that this template replaces, kept in the repository.
SEED_BLUEPRINT = EXAMPLES_DIR / "legacy" / "phase8_test_system_blueprint.yaml"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
COOKIECUTTER = str(Path(sys.executable).with_name("cookiecutter"))  # the command users run

# The worker models a test of the running service covers: the shipped defaults (4 request
# threads per worker), and one thread (GUNICORN_THREADS=1, for code that is not thread-safe),
# where the loop thread answers each request itself and a standby thread takes the loop over
# while a request is stalled.
ONE_THREAD = {"GUNICORN_THREADS": "1"}
ONE_THREAD_BECAUSE = "GUNICORN_THREADS=1 is a supported setting with its own worker model"
WORKER_MODELS = [
    pytest.param({}, id="shipped-defaults"),
    pytest.param(ONE_THREAD, id="one-thread"),
]


def bake(output_dir: Path, **extra_context) -> Path:
    """Generate a project from the template without prompts; return its directory."""
    return Path(
        cookiecutter(
            str(TEMPLATE_DIR),
            no_input=True,
            output_dir=str(output_dir),
            extra_context=extra_context,
        )
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a PostgreSQL server to create test databases on.

    Unreachable: the test is skipped, or fails when REQUIRE_POSTGRES=1 (as in CI).
    """
    import psycopg2

    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {url} is unreachable: {exc}"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_databases(postgres_server_url):
    """Makes fresh, empty databases on the server (each dropped afterwards): call it for the
    URL of one."""
    import psycopg2

    admin = psycopg2.connect(postgres_server_url)
    admin.autocommit = True
    made = []

    def make() -> str:
        name = f"template_test_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return urlunsplit(urlsplit(postgres_server_url)._replace(path=f"/{name}"))

    yield make
    with admin.cursor() as cursor:
        for name in made:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def postgres_database(postgres_databases) -> str:
    """A fresh, empty database on the server (dropped afterwards): its URL."""
    return postgres_databases()


def cannot_run_here(reason: str) -> None:
    """A test whose means (root, a tool) this machine lacks: skipped with the reason, or
    failed when REQUIRE_FAULT_TOOLS=1 (.ci/run sets it: CI runs as root and installs them)."""
    if os.environ.get("REQUIRE_FAULT_TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def measure(request):
    """Record what a reliability test measured; with RELIABILITY_REPORT set, each record is
    appended to that JSON-lines file (scripts/reliability turns it into the README table)."""
    import json

    def record(**values) -> None:
        target = os.environ.get("RELIABILITY_REPORT")
        if target:
            line = {"test": request.node.name, **values}
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

    return record


@pytest.fixture
def shop(tmp_path) -> tuple[Path, Path]:
    """A project generated as a user does (the cookiecutter command) from shop.yaml, a copy of
    the order_service example in tmp_path: (project directory, blueprint)."""
    blueprint = tmp_path / "shop.yaml"
    shutil.copy(EXAMPLES_DIR / "order_service.yaml", blueprint)
    command = [COOKIECUTTER, "--no-input", str(TEMPLATE_DIR), f"blueprint={blueprint}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return tmp_path / "order_service", blueprint


def run_python(project: Path, env: dict, *arguments: str) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a project directory, in a shell's environment plus env (the
    README's `python -m app.migrate`, or a script of a test)."""
    from service_validator.server import shell_environment

    return subprocess.run(
        [sys.executable, *arguments],
        cwd=project,
        env={**shell_environment(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
