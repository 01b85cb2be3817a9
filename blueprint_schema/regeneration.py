"""Regenerating a project in place, without losing anything the user wrote.

A generated project carries generation.json: the checked model it was generated from, the
template commit, and the content hash of every file the generator owns (the template's fixed
files and the blueprint-determined ones; never app/custom/, never a file the user added).
Regeneration is the same cookiecutter command with --overwrite-if-exists, run where the
project's directory is. Before cookiecutter writes anything, the pre-generation hook renders
the new project in memory, prints the plan (what changes in the blueprint and in the files,
breaking changes marked) and stops, writing nothing, when a file it would overwrite or delete
was edited by hand or was never the generator's. The post-generation hook then deletes the
generator's files that the new blueprint no longer has, and writes the new record last.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .service_modules import field_types

RECORD = "generation.json"
# What a render leaves that no generation owns: caches of tools run in the template checkout.
_NOT_OWNED = frozenset({"__pycache__", ".ruff_cache", ".pytest_cache"})
_SKELETON = "{{cookiecutter.system_name}}"
BLUEPRINT_COPY = "blueprint.yaml"  # the project's copy of the blueprint it was generated from
CUSTOM_DIR = "app/custom"  # the user's code: written once per component, never owned
MIGRATIONS_DIR = "migrations/versions"  # revisions: written once each, never owned


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Record:
    """What a project was generated from: generation.json."""

    model: dict
    template_commit: str | None
    files: dict[str, str]  # generator-owned path -> sha256 of its content as written

    @classmethod
    def load(cls, project_dir: Path) -> Record | None:
        path = project_dir / RECORD
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["model"], data.get("template_commit"), data["files"])

    def dumps(self) -> str:
        data = {
            "note": "Written by autocoder-template at each generation: what this project was "
            "generated from, and the files regeneration owns. Do not edit.",
            "template_commit": self.template_commit,
            "model": self.model,
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def template_commit(template_dir: Path) -> str | None:
    """The template checkout's commit (None outside git), suffixed when it has local changes."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments],
            cwd=template_dir,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+local-changes" if dirty else head


def skeleton_paths(template_dir: Path) -> set[str]:
    """The template's fixed files, by their path in a project (no file name is templated)."""
    root = template_dir / _SKELETON
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and _NOT_OWNED.isdisjoint(path.relative_to(root).parts)
    }


def render_skeleton(template_dir: Path, context: dict) -> dict[str, bytes]:
    """The template's fixed files as cookiecutter renders them with this context, rendered
    into a temporary directory (hooks off), so that nothing in the project is touched."""
    from cookiecutter.generate import generate_files

    with tempfile.TemporaryDirectory(prefix="regenerate-") as scratch:
        project = Path(
            generate_files(
                repo_dir=str(template_dir),
                context={"cookiecutter": context},
                output_dir=scratch,
                accept_hooks=False,
            )
        )
        return {
            relative: (project / relative).read_bytes() for relative in skeleton_paths(template_dir)
        }


@dataclass(frozen=True)
class Change:
    """One line of the plan."""

    action: str  # "add", "change", "rename", "remove", "drop"
    subject: str  # "store orders", "field orders.notes", "file app/stores/orders.py", ...
    detail: str = ""
    breaking: bool = False
    deletes_data: bool = False

    def __str__(self) -> str:
        mark = "  [breaks clients]" if self.breaking else ""
        mark += "  [deletes data]" if self.deletes_data else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"  {self.action:6} {self.subject}{detail}{mark}"


def blueprint_changes(old: dict, new: dict) -> list[Change]:
    """Components, fields and constraints added, changed and removed; what would break a
    client of the API marked."""
    changes: list[Change] = []
    old_stores, new_stores = old.get("stores", {}), new.get("stores", {})
    sources = {
        name: name if name in old_stores else store.get("renamed_from")
        for name, store in new_stores.items()
    }
    sources = {name: source for name, source in sources.items() if source in old_stores}
    for name in sorted(new_stores.keys() - sources.keys()):
        changes.append(Change("add", f"store {name}", f"table {new_stores[name]['table']}"))
    for name in sorted(old_stores.keys() - set(sources.values())):
        detail = "no longer served; its table and rows stay in the database"
        changes.append(Change("remove", f"store {name}", detail, breaking=True))
    for name, source in sorted(sources.items()):
        old_store, new_store = old_stores[source], new_stores[name]
        if source != name:
            tables = f"table {old_store['table']} -> {new_store['table']}, every row kept"
            changes.append(Change("rename", f"store {source} -> {name}", tables))
        changes += _field_changes(
            name, old_store["fields"], new_store["fields"], new_store.get("renamed_fields", {})
        )
        for column in new_store.get("drop_columns", []):
            if column not in old_store.get("drop_columns", []):
                detail = "deleted with every value in it (drop_columns)"
                changes.append(
                    Change(
                        "drop", f"column {new_store['table']}.{column}", detail, deletes_data=True
                    )
                )
    for table in new.get("drop_tables", []):
        if table not in old.get("drop_tables", []):
            detail = "deleted with every row in it (drop_tables)"
            changes.append(Change("drop", f"table {table}", detail, deletes_data=True))
    old_endpoints, new_endpoints = old.get("endpoints", {}), new.get("endpoints", {})
    for name in sorted(new_endpoints.keys() - old_endpoints.keys()):
        changes.append(Change("add", f"endpoint {name}", new_endpoints[name]["path"]))
    for name in sorted(old_endpoints.keys() - new_endpoints.keys()):
        path = old_endpoints[name]["path"]
        changes.append(Change("remove", f"endpoint {name}", path, breaking=True))
    renamed = {name: source for name, source in sources.items() if name != source}
    for name in sorted(old_endpoints.keys() & new_endpoints.keys()):
        changes += _endpoint_changes(name, old_endpoints[name], new_endpoints[name], renamed)
    return changes


def _field_changes(
    store: str, old: dict | None, new: dict | None, renamed: dict[str, str]
) -> list[Change]:
    if old is None or new is None:
        if old == new:
            return []
        detail = "now a store of JSON documents" if new is None else "now has fields"
        return [Change("change", f"store {store}", detail, breaking=True)]
    changes = []
    old = dict(old)
    for name, earlier in renamed.items():
        if name not in old and earlier in old:
            detail = "every value kept; clients read and send it by its new name"
            changes.append(Change("rename", f"field {store}.{earlier} -> {name}", detail, True))
            old[name] = old.pop(earlier)
    for name in sorted(new.keys() - old.keys()):
        spec = new[name]
        required = spec.get("required") and "default" not in spec
        detail = f"{spec['type']}" + (", required: clients must send it" if required else "")
        changes.append(Change("add", f"field {store}.{name}", detail, breaking=bool(required)))
    for name in sorted(old.keys() - new.keys()):
        detail = "no longer served; its column and values stay in the database"
        changes.append(Change("remove", f"field {store}.{name}", detail, breaking=True))
    for name in sorted(old.keys() & new.keys()):
        before, after = old[name], new[name]
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                detail = f"{key} {_shown(before.get(key))} -> {_shown(after.get(key))}"
                breaking = _narrows(key, before.get(key), after.get(key))
                changes.append(Change("change", f"field {store}.{name}", detail, breaking))
    return changes


def _shown(value: object) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


def _narrows(key: str, before: object, after: object) -> bool:
    """True when a value valid before may be refused after, or a response changes shape."""
    if after is None:  # a constraint removed accepts more; a default removed changes nothing read
        return key == "type"
    if before is None:  # a new constraint (a new default changes nothing for clients)
        return key not in ("default", "description", "index")
    if key == "enum":
        return not set(before) <= set(after)  # type: ignore[arg-type]
    if key in ("max_length", "maximum", "precision"):
        return after < before  # type: ignore[operator]
    if key == "minimum":
        return after > before  # type: ignore[operator]
    if key == "required":
        return bool(after)
    if key == "type":  # a widening whose values are strings in JSON either way reads the same
        same_json = {field_types.TYPES[t].schema({}).get("type") for t in (before, after)}
        widened = after in field_types.WIDER_TYPES.get(before, ())  # type: ignore[arg-type]
        return not (widened and same_json == {"string"})
    return key not in ("default", "description", "index")


def _endpoint_changes(name: str, old: dict, new: dict, renamed: dict[str, str]) -> list[Change]:
    """renamed: {store: its earlier name}: an endpoint that follows its store's rename serves
    what it served."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before == after or key == "description":
            continue
        if key == "operations":
            removed = sorted(set(before or ()) - set(after or ()))
            added = sorted(set(after or ()) - set(before or ()))
            if added:
                changes.append(Change("add", f"endpoint {name}", f"operations {', '.join(added)}"))
            if removed:
                detail = f"operations {', '.join(removed)} no longer offered"
                changes.append(Change("remove", f"endpoint {name}", detail, breaking=True))
            continue
        follows_rename = key == "store" and renamed.get(after) == before  # type: ignore[arg-type]
        breaking = (key in ("path", "store", "auth") and not follows_rename) or (
            key in ("page_size", "max_page_size") and after < before  # type: ignore[operator]
        )
        detail = f"{key} {_shown(before)} -> {_shown(after)}"
        changes.append(Change("change", f"endpoint {name}", detail, breaking))
    return changes


@dataclass(frozen=True)
class FilePlan:
    """What regeneration does to the project's files, and what stops it."""

    changes: list[Change]
    conflicts: list[str]  # reasons nothing may be written


def file_plan(project_dir: Path, record: Record | None, planned: dict[str, bytes]) -> FilePlan:
    """Compare the files a generation would write with the project on disk and its record."""
    owned = record.files if record else {}
    changes, conflicts = [], []
    for relative in sorted(planned):
        path = project_dir / relative
        current = path.read_bytes() if path.is_file() else None
        if current == planned[relative]:
            continue
        if current is None:
            action = "change" if relative in owned else "add"
            detail = "deleted by hand; written again" if relative in owned else ""
            changes.append(Change(action, f"file {relative}", detail))
        elif relative not in owned:
            if record is None:  # no record: a project from before generation.json
                changes.append(Change("change", f"file {relative}", "no record; overwritten"))
            else:
                conflicts.append(f"{relative}: exists, and was not written by the generator")
        elif content_hash(current) != owned[relative]:
            conflicts.append(f"{relative}: edited by hand since it was generated")
        else:
            changes.append(Change("change", f"file {relative}"))
    for relative in sorted(owned.keys() - planned.keys()):
        path = project_dir / relative
        if not path.is_file():
            continue
        if content_hash(path.read_bytes()) != owned[relative]:
            conflicts.append(f"{relative}: edited by hand, and the new blueprint no longer has it")
        else:
            changes.append(Change("remove", f"file {relative}"))
    return FilePlan(changes, conflicts)


def delete_files(project_dir: Path, relatives: list[str]) -> None:
    """Delete files, then the directories they leave empty (up to the project)."""
    root = project_dir.resolve()
    for relative in relatives:
        path = (root / relative).resolve()
        if root not in path.parents:
            raise ValueError(f"refusing to delete outside the project: {relative}")
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def hash_files(project_dir: Path, relatives: set[str]) -> dict[str, str]:
    return {
        relative: content_hash((project_dir / relative).read_bytes())
        for relative in relatives
        if (project_dir / relative).is_file()
    }


def write_atomically(path: Path, text: str) -> None:
    """A record is either the old one or the new one, never half of either."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def cruft_state(context: dict, commit: str | None) -> str | None:
    """.cruft.json, for `cruft check`, `cruft diff` and `cruft update`: the template's git
    source and commit, and the answers that re-render this project (its own blueprint.yaml,
    read from the project directory where cruft runs). None when the template is not a git
    checkout: cruft can only follow a template in git."""
    if commit is None:
        return None
    from cookiecutter.config import get_user_config
    from cookiecutter.repository import expand_abbreviations

    given = expand_abbreviations(context["_template"], get_user_config()["abbreviations"])
    if "://" not in given and not given.startswith("git@"):  # a local checkout
        given = str(Path(context.get("_repo_dir") or given).resolve())
    state = {
        "template": given,
        "commit": commit.removesuffix("+local-changes"),
        "checkout": context.get("_checkout"),
        "context": {
            "cookiecutter": {
                "blueprint": BLUEPRINT_COPY,
                "system_name": context["system_name"],
                "_template": given,
            }
        },
        "directory": None,
        # The user's modules and the revision history: a template update never merges
        # into them.
        "skip": [CUSTOM_DIR, MIGRATIONS_DIR],
    }
    return json.dumps(state, indent=2) + "\n"


def carried_custom_modules(old: dict, new: dict) -> dict[str, str]:
    """{app/custom/<old name>.py: app/custom/<new name>.py} of the stores renamed from the
    old model to the new one (renamed_from): the user's code goes with its store."""
    moves = {}
    for name, store in new.get("stores", {}).items():
        source = store.get("renamed_from")
        if name not in old.get("stores", {}) and source in old.get("stores", {}):
            moves[f"{CUSTOM_DIR}/{source}.py"] = f"{CUSTOM_DIR}/{name}.py"
    return moves
