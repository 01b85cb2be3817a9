"""Every blueprint of tests/invalid_blueprints is refused by the loader, cookiecutter and the CLI.

What each file must produce is listed in tests/invalid_blueprints/expected.yaml.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pytest_cookies.plugin import Cookies

from blueprint_schema import BlueprintError, Diagnostic, load_file

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "invalid_blueprints"
EXPECTED: dict[str, dict] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
NAMES = sorted(EXPECTED)
ONE_MIB = 1024 * 1024
MAX_COMMITTED_BYTES = 50_000

VALID_COMPONENTS = """components:
  - name: orders
    type: store
  - name: orders_api
    type: api_endpoint
    config:
      store: orders
"""


def _invalid_utf8() -> bytes:
    """A blueprint whose description is Latin-1: byte 0xe9 on line 4, column 20."""
    head = '# Latin-1, not UTF-8.\nschema_version: 1\nsystem:\n  description: "Caf'
    rest = ' orders"\n  name: shop\n' + VALID_COMPONENTS
    return head.encode("ascii") + b"\xe9" + rest.encode("ascii")


def _too_large() -> bytes:
    """A valid blueprint padded with comment lines to just over 1 MiB."""
    text = "schema_version: 1\nsystem:\n  name: shop\n" + VALID_COMPONENTS
    padding = "# padding\n" * ((ONE_MIB - len(text)) // 10 + 1)
    data = (text + padding).encode("ascii")
    assert len(data) > ONE_MIB
    return data


GENERATED = {"32_invalid_utf8.yaml": _invalid_utf8, "33_file_too_large.yaml": _too_large}


def corpus_file(name: str, directory: Path) -> Path:
    """The corpus file `name`; generated ones are written into directory first."""
    if name not in GENERATED:
        return CORPUS / name
    path = directory / name
    path.write_bytes(GENERATED[name]())
    return path


def describe(errors: list[Diagnostic]) -> str:
    """The errors as the CLI prints them."""
    return "\n".join(str(error) for error in errors) or "(no errors)"


def assert_expected_errors(errors: list[Diagnostic], expected: list[dict]) -> None:
    """Each expected error is reported, and nothing else."""
    actual = describe(errors)
    for want in expected:
        matches = [
            error
            for error in errors
            if error.path == want["path"]
            and want["message"] in error.message
            and ("line" not in want or error.line == want["line"])
        ]
        assert matches, f"expected {want} among:\n{actual}"
    assert len(errors) == len(expected), f"expected {len(expected)} error(s), got:\n{actual}"


def assert_located(errors: list[Diagnostic], file: str, *, located: bool) -> None:
    """Every error reads `file:line:col: path: message`, with a real line when it has one."""
    for error in errors:
        assert error.file == file
        text = str(error)
        assert re.match(rf"{re.escape(file)}:\d+:\d+: ", text), f"no file:line:col: in {text!r}"
        assert text == f"{file}:{error.line}:{error.column}: {error.path}: {error.message}"
        if located:
            assert error.line >= 1 and error.column >= 1, f"no position in {text!r}"


def test_corpus_matches_expectations():
    """expected.yaml lists exactly the corpus; committed files are small and well named."""
    committed = {path.name for path in CORPUS.glob("*.yaml")} - {"expected.yaml"}
    generated = {name for name, entry in EXPECTED.items() if "generated" in entry}
    assert generated == set(GENERATED)
    assert not committed & generated
    assert committed | generated == set(EXPECTED)
    assert len(EXPECTED) >= 24
    for name in committed:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.yaml|multi_errors\.yaml", name), name
        assert (CORPUS / name).stat().st_size < MAX_COMMITTED_BYTES, name
    for name, entry in EXPECTED.items():
        assert entry["errors"], name
        assert all({"path", "message"} <= set(error) for error in entry["errors"]), name


@pytest.mark.parametrize("name", NAMES)
def test_loader_reports_the_expected_errors(name, tmp_path):
    """load_file raises BlueprintError with the listed errors, each located in the file."""
    path = corpus_file(name, tmp_path)
    with pytest.raises(BlueprintError) as caught:
        load_file(path)
    errors = caught.value.errors
    assert_located(errors, str(path), located=EXPECTED[name].get("located", True))
    assert_expected_errors(errors, EXPECTED[name]["errors"])
    assert str(caught.value) == describe(errors)


@pytest.fixture
def bake_dir(tmp_path) -> Path:
    """Where cookies.bake writes (an empty directory of its own)."""
    directory = tmp_path / "baked"
    directory.mkdir()
    return directory


@pytest.fixture
def cookies(bake_dir, _cookiecutter_config_file) -> Cookies:
    """pytest-cookies' baker with this repository as the template, baking into bake_dir."""

    def new_output_dir(name: str) -> Path:
        directory = bake_dir / name
        directory.mkdir()
        return directory

    return Cookies(str(TEMPLATE_DIR), new_output_dir, _cookiecutter_config_file)


@pytest.mark.parametrize("name", NAMES)
def test_baking_fails_and_writes_nothing(name, tmp_path, cookies, bake_dir, capsys):
    """Cookiecutter stops with a non-zero exit and the errors, before any project exists."""
    path = corpus_file(name, tmp_path)
    result = cookies.bake(extra_context={"blueprint": str(path)})
    stderr = capsys.readouterr().err
    exit_code = result.exit_code
    assert exit_code != 0, f"baked {result.project_path}"
    assert result.exception is not None
    leftovers = [item for item in bake_dir.rglob("*") if item.is_file() or item.parent != bake_dir]
    assert leftovers == []
    for want in EXPECTED[name]["errors"]:
        assert want["message"] in stderr, f"{want['message']!r} not in:\n{stderr}"
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name", NAMES)
def test_check_command_exits_1(name, tmp_path):
    """`python -m blueprint_schema check FILE` prints the errors, exits 1, shows no traceback."""
    path = corpus_file(name, tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "blueprint_schema", "check", str(path)],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    for want in EXPECTED[name]["errors"]:
        line = f"{want['line']}:" if "line" in want else ""
        assert re.search(
            rf"^{re.escape(str(path))}:{line}.*: {re.escape(want['path'])}: .*"
            + re.escape(want["message"]),
            run.stderr,
            re.MULTILINE,
        ), f"{want} not in:\n{run.stderr}"
    assert f"{path}: {len(EXPECTED[name]['errors'])} error(s)" in run.stderr


def test_all_errors_of_a_file_are_reported_at_once():
    """Three independent mistakes come out together, in file order."""
    path = CORPUS / "multi_errors.yaml"
    with pytest.raises(BlueprintError) as caught:
        load_file(path)
    reported = [(error.line, error.path) for error in caught.value.errors]
    assert reported == [
        (10, "components[0].config.fields.id"),
        (14, "components[1].config.store"),
        (18, "components[2].config.path"),
    ]
    assert len(str(caught.value).splitlines()) == 3


def test_deep_nesting_is_refused_without_reading_it_all(tmp_path):
    """A small, deeply nested file is refused at once, not after parsing all its levels."""
    depth = 2000
    path = tmp_path / "nested.yaml"
    nested = "[" * depth + "]" * depth
    path.write_text(f"schema_version: 1\nsystem:\n  name: shop\n  description: {nested}\n")
    started = time.perf_counter()
    with pytest.raises(BlueprintError) as caught:
        load_file(path)
    elapsed = time.perf_counter() - started
    assert [error.line for error in caught.value.errors] == [4]
    assert "nesting deeper than 32 levels" in str(caught.value)
    assert elapsed < 1.0, f"{path.stat().st_size} bytes took {elapsed:.1f} s to refuse"
