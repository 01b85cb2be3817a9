"""Regeneration in place: the record a project keeps, the plan, what is kept, what stops it,
and template updates through cruft."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import COOKIECUTTER, EXAMPLES_DIR, TEMPLATE_DIR

from blueprint_schema import regeneration
from blueprint_schema.model import load_file

CRUFT = str(Path(sys.executable).with_name("cruft"))
GIT = ["git", "-c", "user.email=test@example.org", "-c", "user.name=test"]


def cookiecutter(cwd: Path, blueprint: Path, *extra: str, template: Path = TEMPLATE_DIR):
    """The README's command, as a user runs it (regeneration adds --overwrite-if-exists)."""
    return subprocess.run(
        [COOKIECUTTER, "--no-input", *extra, str(template), f"blueprint={blueprint}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def regenerate(cwd: Path, blueprint: Path, template: Path = TEMPLATE_DIR):
    return cookiecutter(cwd, blueprint, "--overwrite-if-exists", template=template)


def snapshot(project: Path) -> dict[str, bytes]:
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file()
    }


def changed_blueprint(source: Path, target: Path, change) -> Path:
    blueprint = yaml.safe_load(source.read_text())
    change(blueprint)
    target.write_text(yaml.safe_dump(blueprint, sort_keys=False), encoding="utf-8")
    return target


def with_customers_and_notes(blueprint: dict) -> None:
    fields = blueprint["components"][0]["config"]["fields"]
    fields["notes"] = {"type": "string"}
    fields["priority"] = {"type": "integer", "required": True}
    fields["customer"]["max_length"] = 200  # wider: nothing a client sent before is refused
    del fields["paid_at"]
    add_customers(blueprint, ["get"])


def add_customers(blueprint: dict, operations: list[str]) -> None:
    """A second store, customers, and its endpoint."""
    blueprint["components"] += [
        {
            "name": "customers",
            "type": "store",
            "config": {"table": "customers", "fields": {"name": {"type": "string"}}},
        },
        {
            "name": "customers_api",
            "type": "api_endpoint",
            "config": {"path": "/customers", "store": "customers", "operations": operations},
        },
    ]


def test_a_project_records_what_it_was_generated_from(shop):
    project, blueprint = shop
    record = regeneration.Record.load(project)
    assert record is not None
    assert record.model == load_file(blueprint).model
    skeleton = regeneration.skeleton_paths(TEMPLATE_DIR)
    assert skeleton <= record.files.keys()
    assert {"blueprint.yaml", "app/stores/orders_sync.py", "README.md"} <= record.files.keys()
    assert not [
        path
        for path in record.files
        if path.startswith("app/custom/") and path != "app/custom/__init__.py"
    ]  # the user's modules are never owned
    for path, digest in record.files.items():
        assert hashlib.sha256((project / path).read_bytes()).hexdigest() == digest, path
    cruft = json.loads((project / ".cruft.json").read_text())
    assert cruft["context"]["cookiecutter"]["blueprint"] == "blueprint.yaml"
    assert cruft["skip"] == ["app/custom", "migrations/versions"]
    assert cruft["commit"] == record.template_commit.removesuffix("+local-changes")


def test_regeneration_prints_the_plan_and_keeps_what_the_user_wrote(shop, tmp_path):
    project, blueprint = shop
    custom = project / "app" / "custom" / "orders.py"
    custom.write_text(custom.read_text() + "# my change\n")
    added = project / "app" / "my_module.py"
    added.write_text("MINE = 1\n")
    new = changed_blueprint(blueprint, tmp_path / "shop2.yaml", with_customers_and_notes)

    result = regenerate(tmp_path, new)
    assert result.returncode == 0, result.stderr
    plan = result.stdout.splitlines()
    assert "Regenerating order_service:" in plan
    for line in (
        "  add    store customers: table customers",
        "  add    field orders.notes: string",
        "  add    field orders.priority: integer, required: clients must send it  [breaks clients]",
        "  remove field orders.paid_at: no longer served; its column and values stay in the "
        "database  [breaks clients]",
        "  change field orders.customer: max_length 120 -> 200",
        "  add    endpoint customers_api: /customers",
        "  add    file app/stores/customers_sync.py",
        "  change file blueprint.yaml",
    ):
        assert line in plan, (line, plan)
    assert custom.read_text().endswith("# my change\n")
    assert added.read_text() == "MINE = 1\n"
    assert (project / "app" / "endpoints" / "customers_api.py").is_file()
    assert (project / "app" / "custom" / "customers.py").is_file()
    record = regeneration.Record.load(project)
    assert record.model == load_file(new).model
    assert "app/my_module.py" not in record.files

    # Back to the first blueprint: the removed component's generated files go, its custom
    # module stays; nothing else of the user's is touched.
    result = regenerate(tmp_path, blueprint)
    assert result.returncode == 0, result.stderr
    assert "  remove file app/stores/customers_sync.py" in result.stdout.splitlines()
    assert "  remove endpoint customers_api: /customers  [breaks clients]" in result.stdout
    for gone in (
        "app/stores/customers.py",
        "app/stores/customers_sync.py",
        "app/endpoints/customers_api.py",
    ):
        assert not (project / gone).exists(), gone
    assert (project / "app" / "custom" / "customers.py").is_file()
    assert custom.read_text().endswith("# my change\n")
    assert added.read_text() == "MINE = 1\n"
    assert (
        regeneration.Record.load(project)
        .files.keys()
        .isdisjoint({"app/stores/customers.py", "app/endpoints/customers_api.py"})
    )


def test_regenerating_the_same_blueprint_changes_nothing(shop, tmp_path):
    project, blueprint = shop
    before = snapshot(project)
    result = regenerate(tmp_path, blueprint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "  nothing changes"
    assert snapshot(project) == before


def test_the_projects_own_blueprint_can_be_edited_in_place_and_regenerated_from(shop, tmp_path):
    project, _ = shop
    copy = project / "blueprint.yaml"
    text = copy.read_text().replace(
        "      paid_at:\n", "      notes:  # delivery notes\n        type: string\n      paid_at:\n"
    )
    assert "# delivery notes" in text
    copy.write_text(text)
    result = regenerate(tmp_path, copy)
    assert result.returncode == 0, result.stderr
    assert "  add    field orders.notes: string" in result.stdout.splitlines()
    assert copy.read_text() == text  # kept as the user wrote it, comments and all
    assert "notes" in (project / "config" / "system_config.yaml").read_text()
    assert regenerate(tmp_path, copy).stdout.splitlines()[-1] == "  nothing changes"


@pytest.mark.parametrize(
    "edit, named",
    [
        # a generator-owned file edited by hand, which the new blueprint rewrites
        ("app/endpoints/orders_api.py", "app/endpoints/orders_api.py: edited by hand"),
        # a fixed file of the template edited by hand
        ("app/resources.py", "app/resources.py: edited by hand"),
        # the user's own file where the new blueprint puts a generated one
        ("app/stores/customers.py", "app/stores/customers.py: exists, and was not written"),
    ],
)
def test_a_file_the_user_wrote_stops_regeneration_before_anything_is_written(
    shop, tmp_path, edit, named
):
    project, blueprint = shop
    path = project / edit
    path.write_text((path.read_text() if path.exists() else "") + "# the user's\n")
    before = snapshot(project)
    new = changed_blueprint(blueprint, tmp_path / "shop2.yaml", with_customers_and_notes)

    result = regenerate(tmp_path, new)
    assert result.returncode != 0
    assert f"error: {named}" in result.stderr
    assert "regeneration stopped before writing anything" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(project) == before


def test_an_edited_file_of_a_removed_component_stops_regeneration(shop, tmp_path):
    project, blueprint = shop
    new = changed_blueprint(blueprint, tmp_path / "shop2.yaml", with_customers_and_notes)
    assert regenerate(tmp_path, new).returncode == 0
    generated = project / "app" / "stores" / "customers_sync.py"
    generated.write_text(generated.read_text() + "# the user's\n")
    before = snapshot(project)
    result = regenerate(tmp_path, blueprint)
    assert result.returncode != 0
    assert "app/stores/customers_sync.py: edited by hand, and the new blueprint no longer" in (
        result.stderr
    )
    assert snapshot(project) == before


@pytest.mark.parametrize(
    "key, before, after, breaking",
    [
        ("max_length", 120, 200, False),
        ("max_length", 120, 80, True),
        ("enum", ["a", "b"], ["a", "b", "c"], False),
        ("enum", ["a", "b"], ["a"], True),
        ("minimum", 0, -5, False),
        ("minimum", 0, 5, True),
        ("maximum", 10, 5, True),
        ("required", None, True, True),
        ("required", True, None, False),
        ("unique", None, True, True),
        ("default", None, "x", False),
        ("index", None, True, False),
        ("type", "integer", "number", True),
        ("type", "string", "text", False),
        ("type", "email", "string", False),
        ("type", "text", "string", True),
    ],
)
def test_changes_that_may_refuse_what_clients_sent_before_are_marked(key, before, after, breaking):
    old = {"stores": {"s": {"fields": {"f": {"type": "string", key: before}}}}}
    new = {"stores": {"s": {"fields": {"f": {"type": "string", key: after}}}}}
    for spec in (old, new):
        field = spec["stores"]["s"]["fields"]["f"]
        if field[key] is None:
            del field[key]
    (change,) = regeneration.blueprint_changes(old, new)
    assert change.breaking is breaking, change


def _commit_all(repository: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repository, check=True, timeout=60)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=repository, check=True, timeout=60)


def _copy_template(target: Path) -> None:
    """The template as it is checked out here (with uncommitted work), as a new git repository."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=TEMPLATE_DIR,
            capture_output=True,
            check=True,
            timeout=60,
        )
        .stdout.decode()
        .split("\0")
    )
    for relative in filter(None, listed):
        source = TEMPLATE_DIR / relative
        if source.is_file() and not relative.startswith("benchmarks/results"):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True, timeout=60)
    _commit_all(target, "template, first version")


@pytest.mark.slow
def test_cruft_brings_a_template_update_into_a_project_and_keeps_custom_code(tmp_path):
    template = tmp_path / "template"
    template.mkdir()
    _copy_template(template)
    result = cookiecutter(tmp_path, EXAMPLES_DIR / "order_service.yaml", template=template)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "order_service"
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, timeout=60)
    _commit_all(project, "generated")
    custom = project / "app" / "custom" / "orders.py"
    custom.write_text(custom.read_text() + "# my change\n")
    _commit_all(project, "custom code")

    def cruft(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [CRUFT, *arguments], cwd=project, capture_output=True, text=True, timeout=300
        )

    assert cruft("check").returncode == 0
    skeleton_file = template / "{{cookiecutter.system_name}}" / "app" / "defaults.py"
    skeleton_file.write_text(skeleton_file.read_text() + "# a newer template\n")
    _commit_all(template, "template, second version")

    assert cruft("check").returncode != 0  # the project is behind its template
    diff = cruft("diff")  # the project against its template: custom code is not a deviation
    assert diff.returncode == 0 and "app/custom" not in diff.stdout, diff.stdout + diff.stderr
    update = cruft("update", "--skip-apply-ask")
    assert update.returncode == 0, update.stdout + update.stderr
    assert (project / "app" / "defaults.py").read_text().endswith("# a newer template\n")
    assert custom.read_text().endswith("# my change\n")
    assert not list(project.rglob("*.rej")) and not list(project.rglob("*.orig"))
    assert cruft("check").returncode == 0
    # The record came along: regeneration afterwards finds nothing edited by hand.
    again = regenerate(tmp_path, project / "blueprint.yaml", template=template)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "  nothing changes"


def test_the_command_run_inside_the_project_refuses_to_nest_one(shop):
    project, blueprint = shop
    before = snapshot(project)
    result = regenerate(project, blueprint)
    assert result.returncode != 0
    assert f"error: {project} is a generated project: run the command in the directory" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert snapshot(project) == before  # no project made inside it


def test_a_renamed_store_takes_its_custom_code_along(shop, tmp_path):
    """The user's module of a store renamed with renamed_from moves with it (the plan says
    so), and its rules keep applying to the renamed store's writes."""
    from service_validator.server import GunicornServer, http

    project, blueprint = shop
    custom = project / "app" / "custom" / "orders.py"
    custom.write_text(
        custom.read_text().replace(
            "    return record\n",
            '    if record.get("customer") == "blocked":\n'
            "        from app.problems import Problem\n\n"
            '        raise Problem(422, "Unprocessable Content", "blocked customer")\n'
            "    return record\n",
        )
    )
    mine = custom.read_text()

    def renamed(document: dict) -> None:
        store = document["components"][0]
        store["name"] = "purchases"
        store["config"]["renamed_from"] = "orders"
        document["components"][1]["config"]["store"] = "purchases"
        document["bindings"] = [{"from": "orders_api", "to": "purchases"}]

    result = regenerate(tmp_path, changed_blueprint(blueprint, tmp_path / "r.yaml", renamed))
    assert result.returncode == 0, result.stderr
    assert (
        "  rename file app/custom/orders.py -> app/custom/purchases.py: your code, with its store"
        in result.stdout.splitlines()
    ), result.stdout
    assert not custom.exists()
    assert (project / "app" / "custom" / "purchases.py").read_text() == mine
    with GunicornServer(project, tmp_path / "run") as server:
        body = {"customer": "blocked", "total": 1, "email": "b@example.org"}
        refused = http("POST", f"{server.url}/orders", body)
        assert refused.status == 422 and "blocked customer" in refused.body.decode()
