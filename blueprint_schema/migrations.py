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
    "rename_store": "rename table {0} to {1}, every row kept",
    "keep_removed_store": "keep table {0}: no longer served, its rows stay",
    "drop_store": "DROP table {0} and every row in it (drop_tables)",
    "add_field": "add column {0}.{1}",
    "rename_field": "rename column {0}.{1} to {2}, every value kept",
    "change_field": "change column {0}.{1}",
    "keep_removed_field": "keep column {0}.{1}: no longer served, its values stay",
    "drop_field": "DROP column {0}.{1} and every value in it (drop_columns)",
    "create_index": "create index on {0}.{1} (on PostgreSQL CONCURRENTLY: reads and writes go on)",
}
# The options whose change makes no step: the service alone uses them.
_DATABASE_OPTIONS = field_types.DATABASE_OPTIONS


class UnsupportedChange(Exception):
    """A blueprint change no migration can make without losing or rewriting data."""

    def __init__(self, path: tuple, message: str) -> None:
        super().__init__(message)
        self.path = path  # where in the blueprint (its normalised model): for file:line:col


Step = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Revision:
    """One revision: its steps (with a sentence each) and the data its steps read."""

    number: str
    steps: list[Step]
    words: list[str]
    data: dict  # tables (as it leaves them), before, renamed, columns

    @property
    def stem(self) -> str:
        first, arguments = self.steps[0]
        slug = "_".join((first, *arguments))[:48].rstrip("_")
        return f"{self.number}_{slug}"

    def summary(self) -> list[str]:
        return self.words

    def files(self) -> dict[str, str]:
        """The script and its table definitions, by their path in the project."""
        note = {
            "note": (
                "The tables as this revision leaves them (tables) and as the one before left "
                "them (before), what it renames, and every column the database then has "
                "(columns: {table: {column: type}}, removed fields' columns included): what "
                "its steps read."
            )
        }
        return {
            f"{VERSIONS_DIR}/{self.stem}.py": self._script(),
            f"{VERSIONS_DIR}/{self.stem}.json": json.dumps(
                {**note, **self.data}, indent=2, ensure_ascii=False
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


@dataclass(frozen=True)
class ColumnHistory:
    """What the project's revisions did to the database."""

    now: dict[str, dict[str, str]]  # {table: {column: type}} after the latest revision
    ever: dict[str, set[str]]  # {table: every column a revision ever made in it}


def column_history(project_dir: Path) -> ColumnHistory:
    """The columns of the project's database, from its revisions: a field the blueprint
    removed keeps its column, and values, until drop_columns names it."""
    now: dict[str, dict[str, str]] = {}
    ever: dict[str, set[str]] = {}
    for script in migrate.revision_scripts(project_dir / VERSIONS_DIR):
        data = json.loads(script.with_suffix(".json").read_text(encoding="utf-8"))
        if "columns" in data:
            now = {table: dict(columns) for table, columns in data["columns"].items()}
        else:  # a revision written before revisions listed their columns: nothing dropped
            for table, fields in data["tables"].items():
                for name, spec in (fields or {}).items():
                    now.setdefault(table, {})[name] = spec["type"]
                now.setdefault(table, {})
        for table, columns in now.items():
            ever.setdefault(table, set()).update(columns)
    return ColumnHistory(now, ever)


def next_revisions(
    old_model: dict | None, new_model: dict, latest: str | None, history: ColumnHistory
) -> list[Revision]:
    """The revisions a regeneration from old_model to new_model needs: none, one, or two
    when it adds an index to an existing table (built CONCURRENTLY on PostgreSQL, which no
    transaction may hold: a revision of its own, after the other).

    latest is the project's newest revision, history what its revisions made. With no
    earlier revision (a new project, or one generated before migrations existed), the
    revision creates or adopts every table. Raises UnsupportedChange for a change that would
    lose or rewrite stored values, or that names what does not exist.
    """
    number = int(latest) + 1 if latest else 1
    after = tables(new_model)
    if latest is None or old_model is None:
        columns = {table: _types(fields) for table, fields in after.items()}
        steps = [("create_store", (table,)) for table in sorted(after)]
        data = {"tables": after, "before": None, "renamed": {}, "columns": columns}
        return [_revision(number, steps, {}, data)] if steps else []
    change = _Change(old_model, new_model, history)
    revisions = []
    if change.steps:
        revisions.append(_revision(number, change.steps, change.words, change.data()))
        number += 1
    if change.indexes:
        data = {**change.data(), "before": after, "renamed": {}}
        revisions.append(_revision(number, change.indexes, {}, data))
    return revisions


def _revision(number: int, steps: list[Step], words: dict[int, str], data: dict) -> Revision:
    said = [
        _STEP_WORDS[step].format(*arguments) + words.get(index, "")
        for index, (step, arguments) in enumerate(steps)
    ]
    return Revision(f"{number:04d}", steps, said, data)


def _types(fields: dict | None) -> dict[str, str]:
    return {name: spec["type"] for name, spec in (fields or {}).items()}


class _Change:
    """The steps from one model to the next, over the columns the database has."""

    def __init__(self, old_model: dict, new_model: dict, history: ColumnHistory) -> None:
        self.steps: list[Step] = []
        self.indexes: list[Step] = []  # create_index: a revision of their own
        self.words: dict[int, str] = {}  # more words for a step, by its index
        self.before = tables(old_model)
        self.after = tables(new_model)
        self.columns = {table: dict(columns) for table, columns in history.now.items()}
        self.renamed_tables: dict[str, str] = {}
        self.renamed_fields: dict[str, dict[str, str]] = {}
        old_stores, new_stores = old_model["stores"], new_model["stores"]
        sources = self._store_sources(old_stores, new_stores)
        store_of = {store["table"]: name for name, store in new_stores.items()}
        dropped = new_model.get("drop_tables", [])
        for table in sorted(self.after):
            source = sources.get(table)
            if source is None:
                self._step("create_store", table)
                self.columns[table] = {**self.columns.get(table, {}), **_types(self.after[table])}
            elif source != table:
                if table in self.columns:
                    raise UnsupportedChange(
                        ("stores", store_of[table], "renamed_from"),
                        f"the database still has a table {table} (a store removed earlier): "
                        "drop it first (drop_tables), or choose another name",
                    )
                self._step("rename_store", source, table)
                self.renamed_tables[table] = source
                self.columns[table] = self.columns.pop(source, {})
        for table in sorted(self.before.keys() - set(sources.values())):
            self._step("drop_store" if table in dropped else "keep_removed_store", table)
        for index, table in enumerate(dropped):
            if table in self.after or table in sources.values():
                raise UnsupportedChange(
                    ("drop_tables", index),
                    f"table {table} holds a store's rows: remove the store first",
                )
            if table in self.before or table in self.columns:
                if table not in self.before:
                    self._step("drop_store", table)
                self.columns.pop(table, None)
            elif table not in history.ever:
                raise UnsupportedChange(
                    ("drop_tables", index), f"no table {table} was ever made: nothing to drop"
                )
        for table in sorted(self.after):
            source = sources.get(table)
            if source is not None:
                self._fields(new_stores[store_of[table]], store_of[table], table, source, history)

    def data(self) -> dict:
        return {
            "tables": self.after,
            "before": self.before,
            "renamed": {"tables": self.renamed_tables, "fields": self.renamed_fields},
            "columns": self.columns,
        }

    def _step(self, step: str, *arguments: str, words: str = "") -> None:
        if words:
            self.words[len(self.steps)] = words
        self.steps.append((step, arguments))

    def _store_sources(self, old_stores: dict, new_stores: dict) -> dict[str, str]:
        """{table: the table of the earlier model it continues} (itself, or the table of the
        store it is renamed_from); a new table has none."""
        sources = {}
        for name, store in new_stores.items():
            table = store["table"]
            if name in old_stores:
                sources[table] = old_stores[name]["table"]
            elif store.get("renamed_from"):
                old = old_stores.get(store["renamed_from"])
                if old is None:
                    raise UnsupportedChange(
                        ("stores", name, "renamed_from"),
                        f"renamed_from {store['renamed_from']}: the blueprint this project was "
                        "generated from has no such store",
                    )
                sources[table] = old["table"]
            elif table in self.before:
                sources[table] = table  # another store name for the same table
        return sources

    def _fields(
        self, store: dict, name: str, table: str, source: str, history: ColumnHistory
    ) -> None:
        before, after = self.before[source], self.after[table]
        if (before is None) != (after is None):
            kind = "JSON documents" if after is None else "a column per field"
            raise UnsupportedChange(
                ("stores", name, "fields"),
                f"store {name} would change to {kind}: its stored rows cannot follow; "
                "make a new store instead",
            )
        if before is None or after is None:
            return
        columns = self.columns.setdefault(table, {})
        renames = self._field_renames(store, name, table, before, after, columns)
        continued = {field: renames.get(field, field) for field in after}  # field: old name
        for field in sorted(after):
            where = ("stores", name, "fields", field)
            old_name = continued[field]
            spec = after[field]
            if old_name != field:
                self._step("rename_field", table, old_name, field)
                columns[field] = columns.pop(old_name)
            if old_name not in before:
                kept = columns.get(field)
                if kept is not None and kept != spec["type"]:
                    raise UnsupportedChange(
                        (*where, "type"),
                        f"field {name}.{field} was removed earlier with type {kept}, and its "
                        f"column and values are still in the database: add it back as {kept}, "
                        "or give the new field another name",
                    )
                default = spec.get("default")
                words = "" if default is None else f" (existing rows get {_shown(default)})"
                self._step("add_field", table, field, words=words)
                columns[field] = spec["type"]
                if spec.get("index"):
                    self.indexes.append(("create_index", (table, field)))
                continue
            old = before[old_name]
            differences = _differences(old, spec, (name, field), where)
            if differences:
                self._step("change_field", table, field, words=": " + "; ".join(differences))
                columns[field] = spec["type"]
            if spec.get("index") and not old.get("index"):
                self.indexes.append(("create_index", (table, field)))
        served = set(continued.values())
        drop = store.get("drop_columns", [])
        for field in sorted(set(before) - served):
            self._step("drop_field" if field in drop else "keep_removed_field", table, field)
            if field in drop:
                columns.pop(field, None)
        for index, field in enumerate(drop):
            where = ("stores", name, "drop_columns", index)
            if field in after:
                raise UnsupportedChange(
                    where, f"{field} is a field of {name}: remove the field to drop its column"
                )
            if field in columns and field not in before:
                self._step("drop_field", table, field)
                columns.pop(field)
            elif field not in before and field not in history.ever.get(table, set()):
                raise UnsupportedChange(
                    where, f"table {table} never had a column {field}: nothing to drop"
                )

    def _field_renames(
        self, store: dict, name: str, table: str, before: dict, after: dict, columns: dict
    ) -> dict[str, str]:
        """{field: its earlier name} of the fields renamed in this change."""
        renames = {}
        for field, old_name in store.get("renamed_fields", {}).items():
            if field in before:
                continue  # renamed in an earlier regeneration
            where = ("stores", name, "fields", field, "renamed_from")
            if old_name not in before:
                raise UnsupportedChange(
                    where,
                    f"renamed_from {old_name}: store {name} of the blueprint this project was "
                    "generated from has no such field",
                )
            if field in columns:
                raise UnsupportedChange(
                    where,
                    f"table {table} still has a column {field} (a field removed earlier): "
                    "drop it first (drop_columns), or choose another name",
                )
            renames[field] = old_name
        if renames:
            self.renamed_fields[table] = renames
        return renames


def _differences(old: dict, new: dict, names: tuple[str, str], where: tuple) -> list[str]:
    """What changes in the database between two definitions of a field (its index added
    aside: create_index's); UnsupportedChange for a type change no migration makes."""
    store, field = names
    if old["type"] != new["type"] and new["type"] not in field_types.WIDER_TYPES.get(
        old["type"], ()
    ):
        raise UnsupportedChange(
            (*where, "type"),
            f"field {store}.{field} changes type from {old['type']} to {new['type']}: stored "
            "values would be rewritten, and no migration does that (a migration widens "
            + ", ".join(f"{a} to {' or '.join(b)}" for a, b in field_types.WIDER_TYPES.items())
            + "); add a new field instead",
        )
    for option in ("precision", "scale"):
        if old.get(option) != new.get(option):
            raise UnsupportedChange(
                (*where, option),
                f"field {store}.{field} changes {option}: its stored values would be rounded "
                "or refused, and no migration does that; add a new field instead",
            )
    found = []
    for option in _DATABASE_OPTIONS:
        if old.get(option) != new.get(option) and not (option == "index" and new.get(option)):
            found.append(f"{option} {_shown(old.get(option))} -> {_shown(new.get(option))}")
    return found


def _shown(value: object) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)
