"""Shared test helpers: the service's own settings and sample records."""

from __future__ import annotations

import json
from pathlib import Path

from app import migrate
from app.field_types import SYSTEM_COLUMNS
from app.settings import load_settings

SETTINGS = load_settings({})
SAMPLES = json.loads(Path(__file__).with_name("samples.json").read_text(encoding="utf-8"))
ENDPOINTS = sorted(SETTINGS.endpoints)
STORES = sorted(SETTINGS.stores)


def endpoint(name: str):
    return SETTINGS.endpoints[name]


def without_system_columns(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in SYSTEM_COLUMNS}


def same_values(expected: dict, actual: dict) -> bool:
    """Every value sent comes back (numbers compared as numbers)."""
    return all(actual.get(key) == value for key, value in expected.items())


def migrated(app):
    """The app, its database brought to the code's schema revision first (the tests turn
    MIGRATE_ON_START off, so that no request races the migration thread)."""
    settings = app.config["SETTINGS"]
    migrate.upgrade(migrate.sqlalchemy_url(settings.database_url, settings.sqlite_path))
    return app
