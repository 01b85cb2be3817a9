"""How a blueprint gets in: paths, mappings, prompts, clones, renames and regeneration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import COOKIECUTTER, EXAMPLES_DIR, SEED_BLUEPRINT, TEMPLATE_DIR, bake


def cli(*arguments: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COOKIECUTTER, *arguments],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_relative_blueprint_path_is_read_from_the_working_directory(tmp_path):
    (tmp_path / "specs").mkdir()
    shutil.copy(EXAMPLES_DIR / "order_service.yaml", tmp_path / "specs" / "shop.yaml")
    result = cli(str(TEMPLATE_DIR), "--no-input", "blueprint=specs/shop.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "order_service" / "app" / "endpoints" / "orders_api.py").is_file()


def test_absolute_blueprint_path(tmp_path):
    blueprint = f"blueprint={EXAMPLES_DIR / 'library.yaml'}"
    result = cli(str(TEMPLATE_DIR), "--no-input", blueprint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "library" / "app" / "stores" / "notes_sync.py").is_file()


def test_blueprint_as_a_mapping_in_extra_context(cookies):
    mapping = yaml.safe_load((EXAMPLES_DIR / "order_service.yaml").read_text())
    mapping["system"]["name"] = "from_mapping"
    result = cookies.bake(extra_context={"_blueprint": mapping}, template=str(TEMPLATE_DIR))
    assert result.exit_code == 0, result.exception
    assert result.project_path.name == "from_mapping"
    config = yaml.safe_load((result.project_path / "config" / "system_config.yaml").read_text())
    assert config["system"]["name"] == "from_mapping"
    assert list(config["endpoints"]) == ["orders_api"]


def test_prompt_offers_the_bundled_example(tmp_path):
    result = cli(str(TEMPLATE_DIR), cwd=tmp_path, stdin="\n\n")
    assert result.returncode == 0, result.stderr
    assert "examples/order_service.yaml" in result.stdout
    assert (tmp_path / "order_service" / "main.py").is_file()


def test_template_runs_from_a_clone_elsewhere(tmp_path):
    """As with a gh: source: the template lives in some other directory."""
    clone = tmp_path / "clones" / "autocoder-template"
    shutil.copytree(
        TEMPLATE_DIR,
        clone,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv"
        ),
    )
    work = tmp_path / "work"
    work.mkdir()
    result = cli(str(clone), "--no-input", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "order_service" / "tests" / "samples.json").is_file()


def test_system_name_answer_renames_the_service(tmp_path):
    project = bake(tmp_path, blueprint=str(EXAMPLES_DIR / "order_service.yaml"), system_name="shop")
    assert project.name == "shop"
    config = yaml.safe_load((project / "config" / "system_config.yaml").read_text())
    assert config["system"]["name"] == "shop"


def test_invalid_system_name_answer_is_refused_before_anything_is_written(tmp_path):
    result = cli(
        str(TEMPLATE_DIR),
        "--no-input",
        f"blueprint={EXAMPLES_DIR / 'order_service.yaml'}",
        "system_name=../escape",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "system_name '../escape' must be" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "escape").exists()


def test_legacy_blueprint_warnings_name_what_is_dropped(tmp_path):
    result = cli(str(TEMPLATE_DIR), "--no-input", f"blueprint={SEED_BLUEPRINT}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    credential = [line for line in warnings if "connection_string" in line]
    assert credential and "DATABASE_URL" in credential[0]
    assert ":29:" in credential[0]  # file:line of the connection string
    for key in ("inputs", "outputs", "port", "host", "rate_limiting", "testing_mode"):
        assert any(f".{key}: has no effect" in line for line in warnings), key
    migrated = yaml.safe_load((tmp_path / "phase8_test_api" / "blueprint.yaml").read_text())
    assert migrated["schema_version"] == 1
    assert [c["type"] for c in migrated["components"]] == ["store", "api_endpoint"]


def test_blueprint_is_read_once_per_run_and_afresh_in_the_next(tmp_path, monkeypatch):
    from blueprint_schema import cookiecutter_extension

    reads = []
    load_file = cookiecutter_extension.load_file

    def counting_load_file(path, display_name=None):
        reads.append(path)
        return load_file(path, display_name)

    monkeypatch.setattr(cookiecutter_extension, "load_file", counting_load_file)
    source = tmp_path / "shop.yaml"
    shutil.copy(EXAMPLES_DIR / "order_service.yaml", source)

    first = bake(tmp_path / "first", blueprint=str(source))
    assert len(reads) == 1  # the hook writes the model checked before, without reading again

    blueprint = yaml.safe_load(source.read_text())
    blueprint["system"]["description"] = "changed between runs"
    source.write_text(yaml.safe_dump(blueprint), encoding="utf-8")
    second = bake(tmp_path / "second", blueprint=str(source))
    assert len(reads) == 2
    configs = [
        yaml.safe_load((project / "config" / "system_config.yaml").read_text())
        for project in (first, second)
    ]
    assert configs[0]["system"]["description"] != "changed between runs"
    assert configs[1]["system"]["description"] == "changed between runs"
