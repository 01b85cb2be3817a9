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
import textwrap
from dataclasses import dataclass
from pathlib import Path

from . import regeneration
from .service_modules import field_types, migrate

VERSIONS_DIR = regeneration.MIGRATIONS_DIR
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
            "    # Undoing a revision would drop its columns or tables, with every value written\n"
            "    # since: there is no downgrade. Restore a backup taken before the revision.\n"
            '    raise NotImplementedError("no downgrade: restore a backup from before it")\n'
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


def latest_revision(project_dir: Path) -> str | None:
    return migrate.expected_revision(project_dir / VERSIONS_DIR)


def column_types(project_dir: Path) -> dict[str, dict[str, str]]:
    """{table: {column: type}} of every column the project's revisions ever made: a field the
    blueprint removed keeps its column, and values, in the database."""
    found: dict[str, dict[str, str]] = {}
    for script in migrate.revision_scripts(project_dir / VERSIONS_DIR):
        data = json.loads(script.with_suffix(".json").read_text(encoding="utf-8"))
        for table, fields in data["tables"].items():
            for name, spec in (fields or {}).items():
                found.setdefault(table, {})[name] = spec["type"]
    return found


def next_revision(
    old_model: dict | None,
    new_model: dict,
    latest: str | None,
    columns: dict[str, dict[str, str]],
) -> Revision | None:
    """The revision a regeneration from old_model to new_model needs, or None.

    latest is the project's newest revision, columns the types of every column its revisions
    made (column_types). With no earlier revision (a new project, or one generated before
    migrations existed), the revision creates or adopts every table. Raises UnsupportedChange
    for a change that would rewrite stored values.
    """
    number = f"{int(latest) + 1 if latest else 1:04d}"
    after = tables(new_model)
    if latest is None or old_model is None:
        steps = [("create_store", (table,)) for table in sorted(after)]
        return Revision(number, steps, after) if steps else None
    before = tables(old_model)
    store_of = {store["table"]: name for name, store in new_model["stores"].items()}
    _refuse_retyped_columns(after, before, columns, store_of)
    steps: list[tuple[str, tuple[str, ...]]] = []
    for table in sorted(after.keys() - before.keys()):
        steps.append(("create_store", (table,)))
    for table in sorted(before.keys() - after.keys()):
        steps.append(("keep_removed_store", (table,)))
    for table in sorted(after.keys() & before.keys()):
        steps += _field_steps(store_of[table], table, before[table], after[table])
    return Revision(number, steps, after) if steps else None


def _refuse_retyped_columns(
    after: dict[str, dict | None],
    before: dict[str, dict | None],
    columns: dict[str, dict[str, str]],
    store_of: dict[str, str],
) -> None:
    """A field whose column the database has with another type: a field that changes type,
    or one added back, as another type, over the column kept when it was removed."""
    for table, fields in after.items():
        served = before.get(table) or {}
        known = {**columns.get(table, {}), **{n: spec["type"] for n, spec in served.items()}}
        for name, spec in (fields or {}).items():
            kept = known.get(name)
            if kept is None or kept == spec["type"]:
                continue
            store = store_of[table]
            if name in served:
                message = (
                    f"field {store}.{name} changes type from {kept} to {spec['type']}: stored "
                    "values would be rewritten, and no migration does that yet; add a new "
                    "field instead"
                )
            else:
                message = (
                    f"field {store}.{name} was removed earlier with type {kept}, and its column "
                    f"and values are still in the database: add it back as {kept}, or give the "
                    "new field another name"
                )
            raise UnsupportedChange(("stores", store, "fields", name, "type"), message)


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
    return [("add_field", (table, name)) for name in sorted(after.keys() - before.keys())] + [
        ("keep_removed_field", (table, name)) for name in sorted(before.keys() - after.keys())
    ]
