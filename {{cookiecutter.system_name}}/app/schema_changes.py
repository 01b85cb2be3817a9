"""The steps a migration script (migrations/versions/) takes, in both dialects.

A script names its steps with table and field names only; the field definitions they need
come from the JSON file beside it (the blueprint's words stay data), and the SQL from the
table definitions the service runs on (app/persistence/sql.py, app/field_types.py). Every
step keeps every existing row and value.
"""

from __future__ import annotations

import json
from pathlib import Path

from alembic import op
from sqlalchemy import inspect
from sqlalchemy import literal

from .field_types import INTERNAL_COLUMNS
from .persistence.sql import Dialect
from .persistence.sql import Table
from .persistence.sql import index_name
from .persistence.sql import make_table
from .persistence.sql import quote


class Steps:
    """The steps of one revision, over the tables its JSON file describes."""

    def __init__(self, script: str) -> None:
        data = json.loads(Path(script).with_suffix(".json").read_text(encoding="utf-8"))
        self._tables: dict[str, dict | None] = data["tables"]  # {table: fields, or None}

    def _table(self, table: str) -> Table:
        dialect = Dialect(op.get_context().dialect.name)
        return make_table(table, self._tables[table], dialect)

    def create_store(self, table: str) -> None:
        """A new table; or, for a table made before the project had migrations (the service
        created missing tables itself), the columns and indexes it lacks. No row changes."""
        made = self._table(table)
        for statement in made.create_statements():
            op.execute(statement)
        printing = op.get_context().as_sql  # CREATE TABLE IF NOT EXISTS has every column
        for column in (*made.columns, *INTERNAL_COLUMNS):
            added = not printing and self._add_column(made, column)
            if added and made.specs.get(column, {}).get("unique"):
                self._create_unique_index(made, column)

    def add_field(self, table: str, field: str) -> None:
        """A new column. With a default, the default is the column's default too: existing
        rows get it, and so do rows inserted by instances still running the earlier code."""
        made = self._table(table)
        self._add_column(made, field)
        if made.specs[field].get("unique"):
            self._create_unique_index(made, field)

    def keep_removed_field(self, table: str, field: str) -> None:
        """A field the blueprint no longer has: its column and values stay in the database,
        no longer served. Nothing runs: the step is there for the reader of the script."""

    def keep_removed_store(self, table: str) -> None:
        """A store the blueprint no longer has: its table and rows stay in the database."""

    def _add_column(self, made: Table, column: str) -> bool:
        """Add the column unless the table has it; True when it was added (or, printing
        SQL for PostgreSQL, when the statement was printed)."""
        postgres = made.dialect.postgres
        if not postgres and not op.get_context().as_sql and self._has_column(made, column):
            return False
        definition = made.column_definition(column, with_unique=False)
        default = made.specs.get(column, {}).get("default")  # internal columns have no spec
        if default is not None:
            definition += f" DEFAULT {_literal(made.writers[column](default))}"
        exists = " IF NOT EXISTS" if postgres else ""
        op.execute(f"ALTER TABLE {made.quoted} ADD COLUMN{exists} {definition}")
        return True

    def _create_unique_index(self, made: Table, column: str) -> None:
        name = quote(index_name(made.name, column, "key"))
        op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {made.quoted} ({quote(column)})")

    @staticmethod
    def _has_column(made: Table, column: str) -> bool:
        inspector = inspect(op.get_bind())
        return column in {found["name"] for found in inspector.get_columns(made.name)}


def _literal(value: object) -> str:
    """A default value as SQL, quoted by SQLAlchemy for the dialect in use."""
    if isinstance(value, dict | list):
        value = json.dumps(value)
    dialect = op.get_context().dialect
    return str(literal(value).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
