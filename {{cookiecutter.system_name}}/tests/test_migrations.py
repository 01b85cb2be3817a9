"""The schema migrations in migrations/versions/: one chain, applied once each, that turns an
empty database into the tables the blueprint describes."""

from __future__ import annotations

import importlib.util
import re
import sqlite3

from app import migrate
from app.persistence.sql import Dialect
from app.persistence.sql import make_table
from app.settings import load_settings

# A CHECK constraint as CREATE TABLE declares it (app/persistence/sql.py).
CHECK = re.compile(r'CONSTRAINT "[^"]+" CHECK \((?:[^()]|\([^()]*\))*\)')


def _catalog(connection: sqlite3.Connection, table: str) -> dict:
    """A table as SQLite's catalog describes it: columns (type, NOT NULL, default), CHECK
    constraints and indexes."""
    (sql,) = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return {
        "columns": {row[1]: row[2:] for row in connection.execute(f'PRAGMA table_info("{table}")')},
        "checks": sorted(CHECK.findall(sql)),
        "indexes": sorted(
            row
            for row in connection.execute(
                "SELECT name, replace(sql, 'IF NOT EXISTS ', '') FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (table,),
            )
        ),
    }


def _revisions() -> list:
    modules = []
    for script in migrate.revision_scripts():
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def test_the_revisions_form_one_chain():
    revisions = _revisions()
    assert revisions, "the first revision is written when the project is generated"
    numbers = [module.revision for module in revisions]
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]
    assert [module.down_revision for module in revisions] == [None, *numbers[:-1]]
    assert migrate.EXPECTED_REVISION == numbers[-1]


def test_an_empty_database_migrates_to_the_tables_of_the_blueprint(tmp_path):
    """Migrated from empty, each table is what the blueprint describes (its catalog compared
    with a table made from the blueprint's definition directly), beside the columns of fields
    removed earlier; a second run applies nothing and changes nothing."""
    settings = load_settings({"DATA_DIR": str(tmp_path)})
    url = migrate.sqlalchemy_url(None, settings.sqlite_path)
    numbers = [module.revision for module in _revisions()]
    assert migrate.upgrade(url) == numbers
    described = sqlite3.connect(":memory:")
    connection = sqlite3.connect(settings.sqlite_path)
    try:
        migrated = {}
        for store in settings.stores.values():
            table = make_table(store.table, store.fields, Dialect("sqlite"))
            for statement in table.create_statements():
                described.execute(statement)
            expected = _catalog(described, store.table)
            migrated[store.table] = found = _catalog(connection, store.table)
            for column, definition in expected["columns"].items():
                assert found["columns"][column] == definition, (store.table, column)
            assert found["checks"] == expected["checks"]
            assert found["indexes"] == expected["indexes"]
        (revision,) = connection.execute(migrate.READ_REVISION_SQL).fetchone()
        assert revision == numbers[-1]
        assert migrate.upgrade(url) == []  # applied once: a second run finds nothing to do
        assert {table: _catalog(connection, table) for table in migrated} == migrated
    finally:
        connection.close()
        described.close()
