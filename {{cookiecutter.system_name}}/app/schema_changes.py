"""The steps a migration script (migrations/versions/) takes, in both dialects.

A script names its steps with table and field names only; the field definitions they need
come from the JSON file beside it (the blueprint's words stay data): the tables as the revision
leaves them, as the revision before left them, and what it renames. The SQL comes from the
table definitions the service runs on (app/persistence/sql.py, app/field_types.py).

Every step keeps every existing row and value, except drop_field and drop_store, which the
blueprint asks for by name (drop_columns, drop_tables). A constraint that existing rows break
is not added: the migration stops, naming the constraint and how many rows break it, and
nothing is applied (python -m app.migrate runs every pending revision in one transaction).
PostgreSQL changes a table in place (ALTER TABLE). SQLite cannot add or drop a constraint or
change a column's type that way: it rebuilds the table (a new table as the blueprint now
describes it, every row copied into it, the old one dropped), as Alembic's batch mode does.

The SQL is built from quote()d identifiers of the checked blueprint and from constants that
sql_literal() quotes (DDL takes no parameters), which is why some lines carry `nosec B608`.
"""

from __future__ import annotations

import json
from pathlib import Path

from alembic import op
from sqlalchemy import inspect

from .field_types import CHECKED_OPTIONS
from .field_types import INTERNAL_COLUMNS
from .field_types import LARGEST_EXACT_DOUBLE
from .persistence.errors import MigrationRefused
from .persistence.sql import Dialect
from .persistence.sql import Table
from .persistence.sql import constraint_name
from .persistence.sql import index_name
from .persistence.sql import make_table
from .persistence.sql import quote
from .persistence.sql import sql_literal


class Steps:
    """The steps of one revision, over the tables its JSON file describes."""

    def __init__(self, script: str) -> None:
        data = json.loads(Path(script).with_suffix(".json").read_text(encoding="utf-8"))
        self._tables: dict[str, dict | None] = data["tables"]  # {table: fields, or None}
        self._before: dict[str, dict | None] = data.get("before") or {}
        self._printed: dict[str, dict[str, tuple[str, str]]] = {}  # SQLite, printing SQL
        self._columns: dict[str, dict[str, str]] = data.get("columns") or {}  # after it
        renamed = data.get("renamed") or {}
        self._renamed_tables: dict[str, str] = renamed.get("tables", {})  # {new: old}
        self._renamed_fields: dict[str, dict[str, str]] = renamed.get("fields", {})

    # -- the steps ---------------------------------------------------------------------------

    def create_store(self, table: str) -> None:
        """A new table; or, for a table made before the project had migrations (the service
        created missing tables itself), the columns, constraints and indexes it lacks."""
        made = self._table(table)
        if self._printing() or not self._exists(table):
            for statement in made.create_statements():
                op.execute(statement)
            return
        if not made.dialect.postgres:
            self._rebuild(made)
            return
        present = self._constraint_names(table)
        for column in (*made.columns, *INTERNAL_COLUMNS):
            self._add_column(made, column)
        for column in made.columns:
            self._constrain(made, column, {}, present)
        for statement in made.index_statements():
            op.execute(statement)

    def keep_removed_store(self, table: str) -> None:
        """A store the blueprint no longer has: its table and rows stay in the database."""

    def drop_store(self, table: str) -> None:
        """A table the blueprint's drop_tables names: dropped, with every row."""
        op.execute(f"DROP TABLE IF EXISTS {quote(table)}")

    def rename_store(self, old: str, new: str) -> None:
        """A store renamed (renamed_from): its table, with every row, under the new name."""
        op.execute(f"ALTER TABLE {quote(old)} RENAME TO {quote(new)}")
        made = self._table(new)
        if not made.dialect.postgres:
            self._rebuild(made)  # the constraints and indexes, named after the new table
            return
        key = "idempotency_key"
        # PostgreSQL's own names, as it gives them to a new table (when they fit in 63).
        names = [
            (True, f"{old}_pkey", f"{new}_pkey"),
            (True, index_name(old, key), index_name(new, key)),
        ]
        for field, spec in (self._before.get(old) or {}).items():  # named as they were
            names += _field_names(spec, old, new, field, field)
        self._rename_names(new, [name for name in names if len(name[2]) <= 63])
        sequence = f"{new}_id_seq"
        if len(sequence) <= 63:
            op.execute(
                f"ALTER SEQUENCE IF EXISTS {quote(f'{old}_id_seq')} RENAME TO {quote(sequence)}"
            )

    def add_field(self, table: str, field: str) -> None:
        """A new column. With a default, the default is the column's default too: existing
        rows get it, and so do rows inserted by instances still running the earlier code.
        Then its constraints, unless existing rows break them."""
        made = self._table(table)
        spec = made.specs[field]
        if not made.dialect.postgres and (spec.get("required") or made.checks(field)):
            self._rebuild(made)
            return
        self._add_column(made, field)
        if made.dialect.postgres:
            self._constrain(made, field, {}, set())
        elif spec.get("unique"):
            op.execute(made.field_index_statements(field)[0])
        # An index of the field (its index option) is create_index's, in a revision of its own.

    def keep_removed_field(self, table: str, field: str) -> None:
        """A field the blueprint no longer has: its column and values stay in the database,
        no longer served; a NOT NULL on it goes, since the code no longer writes it."""
        if not (self._before_spec(table, field) or {}).get("required"):
            return
        made = self._table(table)
        if made.dialect.postgres:
            op.execute(f"ALTER TABLE {made.quoted} ALTER COLUMN {quote(field)} DROP NOT NULL")
        else:
            self._rebuild(made)

    def drop_field(self, table: str, field: str) -> None:
        """A column the blueprint's drop_columns names: dropped, with every value in it."""
        made = self._table(table)
        if made.dialect.postgres:
            op.execute(f"ALTER TABLE {made.quoted} DROP COLUMN IF EXISTS {quote(field)}")
        else:
            self._rebuild(made, dropped={field})

    def rename_field(self, table: str, old: str, new: str) -> None:
        """A field renamed (renamed_from): its column, with every value, under the new name."""
        made = self._table(table)
        if not made.dialect.postgres:
            self._rebuild(made)  # copies the column's values under its new name
            return
        op.execute(f"ALTER TABLE {made.quoted} RENAME COLUMN {quote(old)} TO {quote(new)}")
        spec = self._before_spec(table, new) or {}
        self._rename_names(table, _field_names(spec, table, table, old, new))

    def change_field(self, table: str, field: str) -> None:
        """A field whose type (widened), required, default, checked options, unique or
        index option changed: the column brought to what the blueprint now says."""
        made = self._table(table)
        old = self._before_spec(table, field) or {}
        spec = made.specs[field]
        column = quote(field)
        retyped = made.dialect.column_type(old) != made.dialect.column_type(spec)
        if not made.dialect.postgres:
            self._rebuild(made)
            return
        if retyped:
            if old.get("type") == "integer":
                self._refuse_inexact_numbers(made, field, made.quoted)
            sql_type = made.dialect.column_type(spec)
            op.execute(
                f"ALTER TABLE {made.quoted} ALTER COLUMN {column} TYPE {sql_type} "
                f"USING {column}::{sql_type}"
            )
        if spec.get("default") != old.get("default"):
            default = spec.get("default")
            change = "DROP DEFAULT" if default is None else "SET DEFAULT "
            if default is not None:
                change += made.dialect.literal(spec, default)
            op.execute(f"ALTER TABLE {made.quoted} ALTER COLUMN {column} {change}")
        if old.get("required") and not spec.get("required"):
            op.execute(f"ALTER TABLE {made.quoted} ALTER COLUMN {column} DROP NOT NULL")
        if old.get("unique") and not spec.get("unique"):
            name = quote(constraint_name(table, field, "unique"))
            op.execute(f"ALTER TABLE {made.quoted} DROP CONSTRAINT IF EXISTS {name}")
            op.execute(f"DROP INDEX IF EXISTS {name}")
        if old.get("index") and not spec.get("index"):
            op.execute(f"DROP INDEX IF EXISTS {quote(constraint_name(table, field, 'index'))}")
        self._constrain(made, field, old, set())

    def create_index(self, table: str, field: str) -> None:
        """An index for a field's `index: true`. On PostgreSQL it is built CONCURRENTLY, so
        reads and writes of the table go on while it is built: outside a transaction, which
        is why the generator gives it a revision of its own."""
        made = self._table(table)
        statements = made.field_index_statements(field, concurrently=made.dialect.postgres)
        statement = statements[-1]  # the plain index: a unique one is change_field's
        if not made.dialect.postgres:
            op.execute(statement)
            return
        name = constraint_name(table, field, "index")
        with op.get_context().autocommit_block():
            if not self._printing() and self._invalid_index(name):
                # An earlier build that failed or was interrupted leaves an invalid index.
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(name)}")
            op.execute(statement)

    # -- PostgreSQL: constraints one by one ---------------------------------------------------

    def _constrain(self, made: Table, field: str, old: dict, present: set[str]) -> None:
        """Add the NOT NULL, CHECK constraints and unique index of `field` that `old` (its
        definition before, {} for a new field) lacked, or that `present` (constraint names
        found on an adopted table) lacks; drop the CHECK constraints `old` had and the field
        no longer has. Each addition is refused when existing rows break it."""
        spec = made.specs[field]
        had = make_table(made.name, {field: old}, made.dialect).checks(field) if old else {}
        wanted = made.checks(field)
        for name, check in had.items():
            if wanted.get(name) != check:
                op.execute(f"ALTER TABLE {made.quoted} DROP CONSTRAINT IF EXISTS {quote(name)}")
        added = {name for name, check in wanted.items() if had.get(name) != check} - present
        if spec.get("required") and not old.get("required"):
            added.add("required")
        if spec.get("unique") and not old.get("unique"):
            added.add("unique")
        self._refuse_broken_rows(made, made.quoted, field, added)
        for name in sorted(added & wanted.keys()):
            op.execute(
                f"ALTER TABLE {made.quoted} ADD CONSTRAINT {quote(name)} CHECK ({wanted[name]})"
            )
        if "required" in added:
            op.execute(f"ALTER TABLE {made.quoted} ALTER COLUMN {quote(field)} SET NOT NULL")
        if "unique" in added:
            op.execute(made.field_index_statements(field)[0])

    def _rename_names(self, table: str, names: list[tuple[bool, str, str]]) -> None:
        """Rename the indexes and CHECK constraints named after a renamed table or column:
        (is an index, old name, new name)."""
        present = None if self._printing() else self._constraint_names(table)
        for is_index, old, new in names:
            if old == new or (present is not None and old not in present):
                continue
            if is_index:
                op.execute(f"ALTER INDEX IF EXISTS {quote(old)} RENAME TO {quote(new)}")
            else:
                op.execute(
                    f"ALTER TABLE {quote(table)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}"
                )

    def _constraint_names(self, table: str) -> set[str]:
        """The names of a PostgreSQL table's constraints and indexes."""
        rows = op.get_bind().exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%(t)s) "
            "UNION SELECT indexname FROM pg_indexes WHERE tablename = %(t)s",
            {"t": table},
        )
        return {row[0] for row in rows}

    def _invalid_index(self, name: str) -> bool:
        rows = op.get_bind().exec_driver_sql(
            "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%(n)s) AND NOT indisvalid",
            {"n": name},
        )
        return rows.first() is not None

    # -- SQLite: rebuilding a table -----------------------------------------------------------

    def _rebuild(self, made: Table, dropped: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Make the table again as the blueprint now describes it, every row copied (SQLite's
        own recipe for the changes its ALTER TABLE cannot make). Columns the blueprint no
        longer has stay, with their values (all but `dropped`); a new column gets its
        default. Refused, before anything is copied, when existing rows break a constraint."""
        found = self._sqlite_columns(made)
        earlier = self._renamed_fields.get(made.name, {})  # {field: its name before}
        served = ["id", *made.columns, "created_at", "updated_at", *INTERNAL_COLUMNS]
        used = {*served, *(earlier.get(column) for column in served)}
        kept = {
            name: definition
            for name, (_, definition) in found.items()
            if name not in used and name not in dropped
        }
        columns = [*served, *kept]
        # Where each column's values come from: the column of that name, the old name of a
        # renamed field, or (a new column) its default.
        origins = {c: c if c in found else earlier.get(c) for c in columns}
        sources = [
            quote(origins[c]) if origins[c] in found else self._new_value(made, c) for c in columns
        ]
        selected = ", ".join(f"{s} AS {quote(c)}" for s, c in zip(sources, columns, strict=True))
        rows = f"SELECT {selected} FROM {made.quoted}"  # nosec B608
        copy = index_name(made.name, "rebuilt")
        sequence = None
        copied = f"({rows}) AS copied"
        for field in made.columns:
            # An integer column made a number: a double keeps integers up to 2^53 exactly.
            was = found.get(origins[field], ("",))[0]
            if was == "INTEGER" and made.specs[field]["type"] == "number":
                self._refuse_inexact_numbers(made, field, copied)
        for field in made.columns:
            everything = {*made.checks(field), "required", "unique"}
            self._refuse_broken_rows(made, copied, field, everything)
        if not self._printing():
            sequence = (
                op.get_bind()
                .exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (made.name,))
                .scalar()
            )
        op.execute(made.create_table_statement(tuple(kept.values()), name=copy))
        op.execute(f"INSERT INTO {quote(copy)} ({', '.join(quote(c) for c in columns)}) {rows}")
        op.execute(f"DROP TABLE {made.quoted}")
        op.execute(f"ALTER TABLE {quote(copy)} RENAME TO {made.quoted}")
        if sequence:  # AUTOINCREMENT never gives again an id it gave before the rebuild
            name = sql_literal(made.name)
            op.execute(f"DELETE FROM sqlite_sequence WHERE name = {name}")  # nosec B608
            op.execute(
                f"INSERT INTO sqlite_sequence (name, seq) SELECT {name}, "  # nosec B608
                f'max({int(sequence)}, coalesce(max("id"), 0)) FROM {made.quoted}'
            )
        for statement in made.index_statements():
            op.execute(statement)
        if self._printing():  # what the next step printed works on
            made_types = {name: made.dialect.column_type(spec) for name, spec in made.specs.items()}
            self._printed[made.name] = {
                name: (made_types[name], f"{quote(name)} {made_types[name]}")
                if name in made_types
                else found.get(name, ("TEXT", f"{quote(name)} TEXT"))
                for name in columns
            }

    @staticmethod
    def _new_value(made: Table, column: str) -> str:
        """What a column the table did not have holds in every existing row: its default."""
        default = made.specs.get(column, {}).get("default")
        return "NULL" if default is None else made.dialect.literal(made.specs[column], default)

    def _refuse_broken_rows(self, made: Table, rows: str, field: str, which: set[str]) -> None:
        """Stop when rows of `rows` (the table, or a subquery with its new columns) break
        what `which` names of the field: its CHECK constraints by name, "required" (NOT
        NULL), "unique"; each broken one is named, with how many rows break it."""
        column = quote(field)
        spec = made.specs[field]
        broken = []
        for name, check in made.checks(field).items():
            if name in which:
                broken.append((f"constraint {name} (CHECK {check})", f"NOT ({check})"))
        if "required" in which and spec.get("required"):
            broken.append((f"NOT NULL on {made.name}.{field} (required)", f"{column} IS NULL"))
        if "unique" in which and spec.get("unique"):
            index = constraint_name(made.name, field, "unique")
            groups = f"{rows} GROUP BY {column} HAVING count(*) > 1"
            duplicated = f"SELECT {column} FROM {groups}"  # nosec B608
            broken.append((f"unique index {index} (unique)", f"{column} IN ({duplicated})"))
        self._refuse(rows, broken)

    def _refuse_inexact_numbers(self, made: Table, field: str, rows: str) -> None:
        """Stop before an integer column becomes a number (a double) when one of its values
        is beyond the integers a double keeps exactly."""
        exact = f"{made.name}.{field} as a number (exact for integers up to {LARGEST_EXACT_DOUBLE})"
        self._refuse(rows, [(exact, f"abs({quote(field)}) > {LARGEST_EXACT_DOUBLE}")])

    def _refuse(self, rows: str, broken: list[tuple[str, str]]) -> None:
        """Stop the migration when any of `rows` meets a condition of `broken`: (what it
        breaks, the condition), each named with how many rows break it."""
        if self._printing():
            return
        problems = []
        for what, condition in broken:
            sql = f"SELECT count(*) FROM {rows} WHERE {condition}"  # nosec B608
            count = op.get_bind().exec_driver_sql(sql).scalar()
            if count:
                problems.append(
                    f"{what}: {count} existing {'row breaks' if count == 1 else 'rows break'} it"
                )
        if problems:
            raise MigrationRefused(
                "; ".join(problems)
                + "; change or remove those rows, or the blueprint, and migrate again"
            )

    def _sqlite_columns(self, made: Table) -> dict[str, tuple[str, str]]:
        """{column: (its type, its definition)} of the table as it is: kept columns are made
        again as they were. Printing SQL, there is no table to ask: the columns are those
        the revision before left (under their names then), as the steps printed so far
        changed them."""
        if self._printing():
            if made.name not in self._printed:
                old_table = self._renamed_tables.get(made.name, made.name)
                before = make_table(old_table, self._before.get(old_table) or {}, made.dialect)
                # Columns of fields removed earlier: those the database keeps after this
                # revision that are no field of it.
                kept = {
                    column: made.dialect.column_type({"type": kind})
                    for column, kind in self._columns.get(made.name, {}).items()
                    if column not in made.specs
                }
                self._printed[made.name] = {
                    name: (sql_type, f"{quote(name)} {sql_type}")
                    for name, sql_type in (
                        ("id", "INTEGER"),
                        *((c, made.dialect.column_type(before.specs[c])) for c in before.columns),
                        ("created_at", "TEXT"),
                        ("updated_at", "TEXT"),
                        *((c, "TEXT") for c in INTERNAL_COLUMNS),
                        *kept.items(),
                    )
                }
            return self._printed[made.name]
        found = {}
        for row in op.get_bind().exec_driver_sql(f"PRAGMA table_info({made.quoted})"):
            _, name, sql_type, _, default, _ = row
            definition = f"{quote(name)} {sql_type}".rstrip()
            default_clause = f" DEFAULT {default}" if default is not None else ""
            found[name] = (sql_type.upper(), definition + default_clause)
        return found

    # -- shared ------------------------------------------------------------------------------

    def _table(self, table: str) -> Table:
        return make_table(table, self._tables[table], self._dialect())

    def _before_table(self, table: str) -> Table:
        """The table as the revision before left it, under its new table and column names."""
        old_table = self._renamed_tables.get(table, table)
        fields = dict(self._before.get(old_table) or {})
        for new, old in self._renamed_fields.get(table, {}).items():
            if old in fields:
                fields[new] = fields.pop(old)
        return make_table(table, fields, self._dialect())

    def _before_spec(self, table: str, field: str) -> dict | None:
        return self._before_table(table).specs.get(field)

    def _dialect(self) -> Dialect:
        return Dialect(op.get_context().dialect.name)

    def _add_column(self, made: Table, column: str) -> bool:
        """Add the column unless the table has it; True when it was added (or, printing
        SQL for PostgreSQL, when the statement was printed). Its NOT NULL comes later
        (_constrain), once no row breaks it."""
        postgres = made.dialect.postgres
        if not postgres and column in self._sqlite_columns(made):
            return False
        definition = made.column_definition(column).replace(" NOT NULL", "", 1)
        exists = " IF NOT EXISTS" if postgres else ""
        op.execute(f"ALTER TABLE {made.quoted} ADD COLUMN{exists} {definition}")
        if not postgres and self._printing():
            sql_type = (
                made.dialect.column_type(made.specs[column]) if column in made.specs else "TEXT"
            )
            self._printed[made.name][column] = (sql_type, definition)
        return True

    @staticmethod
    def _printing() -> bool:
        return op.get_context().as_sql

    @staticmethod
    def _exists(table: str) -> bool:
        return inspect(op.get_bind()).has_table(table)


def _field_names(
    spec: dict, old_table: str, new_table: str, old_field: str, new_field: str
) -> list[tuple[bool, str, str]]:
    """(is an index, old name, new name) of the CHECK constraints and indexes of a field
    defined by `spec`, when its table or its column is renamed."""
    options = [(False, option) for option in CHECKED_OPTIONS if option in spec]
    options += [(True, option) for option in ("unique", "index") if spec.get(option)]
    return [
        (
            is_index,
            constraint_name(old_table, old_field, option),
            constraint_name(new_table, new_field, option),
        )
        for is_index, option in options
    ]
