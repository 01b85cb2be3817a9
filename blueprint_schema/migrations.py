"""Schema migrations computed from a blueprint change: what regeneration writes into
migrations/versions/ of a project, and the changes it refuses.

A revision is two files: a Python script for Alembic that names its steps with checked
identifiers only (app/schema_changes.py runs them), and a JSON file beside it with the table
definitions those steps read, so that the blueprint's words stay data. Revisions are numbered
0001, 0002, ...; the first one creates every table, or adopts the tables of a project generated
before migrations existed (it adds what they lack and changes no row).
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from . import regeneration
from .service_modules import field_types

VERSIONS_DIR = regeneration.MIGRATIONS_DIR
_REVISION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.py$")
# A step of a revision: what app/schema_changes.Steps does, and the sentence it stands for.
_STEP_WORDS = {
    "create_store": "create table {0} (or adopt it, keeping its rows)",
    "keep_removed_store": "keep table {0}: no longer served, its rows stay",
    "add_field": "add column {0}.{1}",
    "keep_removed_field": "keep column {0}.{1}: no longer served, its values stay",
}


class UnsupportedChange(Exception):
    """A blueprint change no migration can make without losing or rewriting data."""

    def __init__(self, path: tuple, message: str) -> None:
        super().__init__(message)
        self.path = path  # where in the blueprint (its normalised model): for file:line:col


@dataclass(frozen=True)
class Revision:
    number: str
    steps: list[tuple[str, tuple[str, ...]]]
    tables: dict[str, dict | None]

    @property
    def stem(self) -> str:
        first, arguments = self.steps[0]
        slug = "_".join((first, *arguments))[:48].rstrip("_")
        return f"{self.number}_{slug}"

    def summary(self) -> list[str]:
        return [_STEP_WORDS[step].format(*arguments) for step, arguments in self.steps]

    def files(self) -> dict[str, str]:
        """The script and its table definitions, by their path in the project."""
        return {
            f"{VERSIONS_DIR}/{self.stem}.py": self._script(),
            f"{VERSIONS_DIR}/{self.stem}.json": json.dumps(
                {
                    "note": "The tables as this revision leaves them: what its steps read.",
                    "tables": self.tables,
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n",
        }

    def _script(self) -> str:
        previous = f"{int(self.number) - 1:04d}" if int(self.number) > 1 else None
        calls = "\n".join(
            f"    steps.{step}({', '.join(_quoted(a) for a in arguments)})"
            for step, arguments in self.steps
        )
        about = [
            f"Revision {self.number}, after {previous or 'none'}:",
            "",
            *(_wrapped(f"- {line}", indent="  ") for line in self.summary()),
            "",
            _wrapped(
                "Written by autocoder-template from a blueprint change. Review it with the "
                f"table definitions beside it ({self.stem}.json); `python -m app.migrate "
                "--sql` prints its SQL. `python -m app.migrate` applies it, once."
            ),
        ]
        down_revision = f'"{previous}"' if previous else "None"
        return (
            '"""' + "\n".join(about) + '\n"""\n\n'
            "from app.schema_changes import Steps\n\n"
            f'revision = "{self.number}"\n'
            f"down_revision = {down_revision}\n"
            "steps = Steps(__file__)\n\n\n"
            "def upgrade() -> None:\n"
            f"{calls}\n\n\n"
            "def downgrade() -> None:\n"
            '    raise NotImplementedError("restore a backup: a downgrade would lose data")\n'
        )


def _wrapped(text: str, indent: str = "") -> str:
    """Docstring text within the generated project's line length (names are at most 63)."""
    return textwrap.fill(text, width=96, subsequent_indent=indent, break_long_words=False)


def _identifier(value: str) -> str:
    if not field_types.IDENTIFIER.fullmatch(value):
        raise ValueError(f"refusing to write {value!r} into a migration script")
    return value


def _quoted(name: str) -> str:
    return f'"{_identifier(name)}"'


def tables(model: dict) -> dict[str, dict | None]:
    """The database side of a model: each store's table and its fields (None: documents)."""
    return {store["table"]: store["fields"] for store in model["stores"].values()}


def existing_revisions(project_dir: Path) -> list[str]:
    directory = project_dir / VERSIONS_DIR
    if not directory.is_dir():
        return []
    return sorted(
        match.group(1) for path in directory.iterdir() if (match := _REVISION_FILE.match(path.name))
    )


def column_types(project_dir: Path) -> dict[str, dict[str, str]]:
    """{table: {column: type}} of every column the project's revisions ever made: a field the
    blueprint removed keeps its column, and values, in the database."""
    found: dict[str, dict[str, str]] = {}
    directory = project_dir / VERSIONS_DIR
    for script in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.json")):
        tables = json.loads(script.read_text(encoding="utf-8")).get("tables", {})
        for table, fields in tables.items():
            for name, spec in (fields or {}).items():
                found.setdefault(table, {})[name] = spec["type"]
    return found


def next_revision(
    old_model: dict | None,
    new_model: dict,
    existing: list[str],
    columns: dict[str, dict[str, str]] | None = None,
) -> Revision | None:
    """The revision a regeneration from old_model to new_model needs, or None.

    With no earlier revision (a new project, or one generated before migrations existed),
    the revision creates or adopts every table. Raises UnsupportedChange for a change that
    would rewrite stored values.
    """
    number = f"{int(max(existing)) + 1 if existing else 1:04d}"
    after = tables(new_model)
    if not existing or old_model is None:
        steps = [("create_store", (table,)) for table in sorted(after)]
        return Revision(number, steps, after) if steps else None
    before = tables(old_model)
    steps: list[tuple[str, tuple[str, ...]]] = []
    for table in sorted(after.keys() - before.keys()):
        steps.append(("create_store", (table,)))
    for table in sorted(before.keys() - after.keys()):
        steps.append(("keep_removed_store", (table,)))
    store_of = {store["table"]: name for name, store in new_model["stores"].items()}
    for table in sorted(after.keys() & before.keys()):
        steps += _field_steps(store_of[table], table, before[table], after[table])
    for table, fields in after.items():  # a field added back over a column that was kept
        for name, spec in (fields or {}).items():
            kept = (columns or {}).get(table, {}).get(name)
            if kept is not None and kept != spec["type"] and name not in (before.get(table) or {}):
                store = store_of[table]
                raise UnsupportedChange(
                    ("stores", store, "fields", name, "type"),
                    f"field {store}.{name} was removed earlier with type {kept}, and its column "
                    f"and values are still in the database: add it back as {kept}, or give the "
                    "new field another name",
                )
    return Revision(number, steps, after) if steps else None


def _field_steps(
    store: str, table: str, before: dict | None, after: dict | None
) -> list[tuple[str, tuple[str, ...]]]:
    if (before is None) != (after is None):
        kind = "JSON documents" if after is None else "a column per field"
        raise UnsupportedChange(
            ("stores", store, "fields"),
            f"store {store} would change to {kind}: its stored rows cannot follow; "
            "make a new store instead",
        )
    if before is None or after is None:
        return []
    steps: list[tuple[str, tuple[str, ...]]] = []
    for name in sorted(after.keys() - before.keys()):
        steps.append(("add_field", (table, name)))
    for name in sorted(before.keys() - after.keys()):
        steps.append(("keep_removed_field", (table, name)))
    for name in sorted(after.keys() & before.keys()):
        old_type, new_type = before[name]["type"], after[name]["type"]
        if old_type != new_type:
            raise UnsupportedChange(
                ("stores", store, "fields", name, "type"),
                f"field {store}.{name} changes type from {old_type} to {new_type}: stored "
                "values would be rewritten, and no migration does that yet; add a new field "
                "instead",
            )
    return steps
