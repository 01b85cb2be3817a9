"""Checks that read the project or run its tools without serving it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from blueprint_schema.model import CREDENTIAL_IN_TEXT

from .report import CheckFailed, Passed

BIN = Path(sys.executable).parent
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "data"}
SECRET_PATTERNS = {
    "credentials in a URL": CREDENTIAL_IN_TEXT,
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "password assignment": re.compile(
        r"""(?i)\b(password|passwd|secret|api_key|token)\b\s*[:=]\s*['"][^'"\s]{6,}['"]"""
    ),
}
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def run_tool(command: list[str], cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run a tool in cwd with output captured (no bytecode written into the project)."""
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
    )


def _first_lines(text: str, count: int = 3) -> str:
    return " | ".join(line for line in text.strip().splitlines()[:count])


def ruff(project: Path) -> Passed:
    result = run_tool(
        [str(BIN / "ruff"), "check", "--no-cache", "--output-format", "concise", "."], project
    )
    if result.returncode != 0:
        raise CheckFailed(_first_lines(result.stdout or result.stderr))
    files = len(list(project.rglob("*.py")))
    return Passed(f"ruff check: no finding in {files} Python files")


def hadolint(project: Path) -> Passed:
    result = run_tool([str(BIN / "hadolint"), "--no-color", "Dockerfile"], project)
    if result.returncode != 0:
        raise CheckFailed(_first_lines(result.stdout or result.stderr))
    return Passed("hadolint: no warning")


def _final_stage_user(dockerfile: str) -> str | None:
    """The USER in force in the last build stage (None: root by default)."""
    user = None
    for raw in dockerfile.replace("\\\n", " ").splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "FROM":
            user = None
        elif instruction == "USER" and len(words) > 1:
            user = words[1]
    return user


def dockerfile_non_root(project: Path) -> Passed:
    user = _final_stage_user((project / "Dockerfile").read_text(encoding="utf-8"))
    name = (user or "").split(":")[0]
    if name in ("", "root", "0"):
        raise CheckFailed(f"the final stage runs as {user or 'root (no USER)'}")
    return Passed(f"the final stage runs as USER {user}")


def gunicorn_config(project: Path) -> Passed:
    with tempfile.TemporaryDirectory() as data:
        result = run_tool(
            [str(BIN / "gunicorn"), "--check-config", "-c", "gunicorn.conf.py", "main:app"],
            project,
            env={"DATA_DIR": data},
        )
    if result.returncode != 0:
        raise CheckFailed(_first_lines(result.stderr or result.stdout, 5))
    return Passed("gunicorn --check-config: the configuration and main:app load")


def bandit(project: Path) -> Passed:
    targets = [name for name in ("app", "main.py", "gunicorn.conf.py") if (project / name).exists()]
    result = run_tool(
        [str(BIN / "bandit"), "-q", "-r", "-f", "json", "--severity-level", "medium", *targets],
        project,
    )
    try:
        findings = json.loads(result.stdout)["results"]
    except (json.JSONDecodeError, KeyError):
        raise CheckFailed(f"bandit did not run: {_first_lines(result.stderr)}") from None
    if findings:
        first = findings[0]
        where = f"{first['filename']}:{first['line_number']}"
        raise CheckFailed(
            f"{len(findings)} medium/high finding(s); first {where} {first['test_id']}: "
            f"{first['issue_text']}",
            {"findings": len(findings)},
        )
    return Passed("bandit: no medium or high finding", {"findings": 0})


def _text_files(project: Path):
    for path in sorted(project.rglob("*")):
        if path.is_file() and not SKIPPED_DIRS & set(path.relative_to(project).parts):
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def no_secrets(project: Path) -> Passed:
    scanned = 0
    for path, text in _text_files(project):
        scanned += 1
        for kind, pattern in SECRET_PATTERNS.items():
            match = pattern.search(text)
            if match:
                line = text.count("\n", 0, match.start()) + 1
                raise CheckFailed(f"{path.relative_to(project)}:{line}: {kind}")
    return Passed(f"no secret in {scanned} files", {"files": scanned})


APP_ROUTES_SCRIPT = """
import json, sys
from pathlib import Path
from main import app
rules = [
    [rule.rule, sorted(set(rule.methods) - {"HEAD", "OPTIONS"})]
    for rule in app.url_map.iter_rules()
]
document = app.test_client().get("/openapi.json").get_json()
Path(sys.argv[1]).write_text(json.dumps({"rules": rules, "openapi": document}))
"""


def app_routes(project: Path) -> tuple[set[tuple[str, str]], dict]:
    """The routes the app registers (as OpenAPI paths) and the document it serves."""
    with tempfile.TemporaryDirectory() as work:
        output = Path(work) / "routes.json"
        command = [sys.executable, "-c", APP_ROUTES_SCRIPT, str(output)]
        result = run_tool(command, project, env={"DATA_DIR": work})
        if result.returncode != 0:
            raise CheckFailed(f"the app does not import: {_first_lines(result.stderr, 5)}")
        loaded = json.loads(output.read_text())
    routes = {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule), method)
        for rule, methods in loaded["rules"]
        for method in methods
    }
    return routes, loaded["openapi"]


def _documented(document: dict) -> set[tuple[str, str]]:
    return {
        (re.sub(r"\{[^}]+\}", "{id}", path), method.upper())
        for path, item in document.get("paths", {}).items()
        for method in item
        if method.upper() in HTTP_METHODS
    }


def routes_match_openapi(project: Path) -> Passed:
    routes, document = app_routes(project)
    served = {(re.sub(r"\{[^}]+\}", "{id}", path), method) for path, method in routes}
    documented = _documented(document)
    missing = sorted(served - documented)
    phantom = sorted(documented - served)
    if missing or phantom:
        parts = []
        if missing:
            parts.append("served but not documented: " + ", ".join(f"{m} {p}" for p, m in missing))
        if phantom:
            parts.append("documented but not served: " + ", ".join(f"{m} {p}" for p, m in phantom))
        raise CheckFailed("; ".join(parts))
    return Passed(f"{len(served)} operations, each served and documented")
