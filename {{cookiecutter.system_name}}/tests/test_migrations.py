"""The schema migrations in migrations/versions/: one chain, applied once each, that turns an
empty database into the tables the blueprint describes."""

from __future__ import annotations

import importlib.util
import sqlite3

from app import migrate
from app.field_types import INTERNAL_COLUMNS
from app.field_types import SYSTEM_COLUMNS
from app.persistence.sql import DOCUMENT_COLUMN
from app.settings import load_settings


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
    settings = load_settings({"DATA_DIR": str(tmp_path)})
    url = migrate.sqlalchemy_url(None, settings.sqlite_path)
    numbers = [module.revision for module in _revisions()]
    assert migrate.upgrade(url) == numbers
    connection = sqlite3.connect(settings.sqlite_path)
    try:
        for store in settings.stores.values():
            found = {row[1] for row in connection.execute(f'PRAGMA table_info("{store.table}")')}
            fields = set(store.fields) if store.fields is not None else {DOCUMENT_COLUMN}
            # Columns of fields the blueprint removed stay, with their values.
            assert {*SYSTEM_COLUMNS, *INTERNAL_COLUMNS, *fields} <= found
        (revision,) = connection.execute(migrate.READ_REVISION_SQL).fetchone()
        assert revision == numbers[-1]
    finally:
        connection.close()
    assert migrate.upgrade(url) == []  # applied once: a second run finds nothing to do
