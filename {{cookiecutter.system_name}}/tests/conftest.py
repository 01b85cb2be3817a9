"""Fixtures: an app per test on a fresh database.

SQLite in a temporary directory by default; with TEST_DATABASE_URL (a PostgreSQL server
URL) each test session creates its own database there and drops it afterwards.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import pytest

from app import create_app
from app.migrate import VERSION_TABLE
from helpers import migrated

SAMPLES = json.loads(Path(__file__).with_name("samples.json").read_text(encoding="utf-8"))
TEST_API_KEY = "test-key-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL database when TEST_DATABASE_URL is set, else None."""
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        yield None
        return
    import psycopg2

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def environ(tmp_path, postgres_url):
    # Migrations are applied by the app fixture, before the app serves anything.
    env = {
        "DATA_DIR": str(tmp_path),
        "API_KEYS": TEST_API_KEY,
        "GUNICORN_THREADS": "2",
        "MIGRATE_ON_START": "false",
    }
    if postgres_url:
        env["DATABASE_URL"] = postgres_url
    return env


@pytest.fixture
def app(environ):
    """An app on the test database, its context pushed so that app.stores.* resolve to it."""
    app = migrated(create_app(environ=environ))
    with app.app_context():
        yield app
    database = app.extensions["database"]
    if database.dialect.postgres:
        # The next test starts from an empty database, and migrates it again.
        names = [table.name for table in database.tables] + [VERSION_TABLE]
        tables = ", ".join(f'"{name}"' for name in names)
        database.run(lambda cursor: cursor.execute(f"DROP TABLE IF EXISTS {tables}"), writes=True)
    database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth_headers():
    return {"X-API-Key": TEST_API_KEY}
