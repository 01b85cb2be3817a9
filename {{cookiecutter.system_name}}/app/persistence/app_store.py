"""A store by name, resolved in the current Flask application.

The generated modules app/stores/<name>_sync.py export one of these as `store`, so code can
import a store before any application exists. Each application built by create_app() owns
its database and its SyncStore objects (in app.extensions), so two applications in one
process (tests, a management script) never share a database.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from flask import current_app

from ..settings import StoreSettings
from .database import Database
from .store import SyncStore


class NoApplication(RuntimeError):
    """A store was used outside a request or an application context."""


class AppStore:
    """The store called `name` in the current application; every SyncStore method works."""

    def __init__(self, name: str, hooks: ModuleType | None = None) -> None:
        self.name = name
        self.hooks = hooks

    def open(self, database: Database, settings: StoreSettings) -> SyncStore:
        """The store of an application being created, over its database."""
        return SyncStore(self.name, database, settings, self.hooks)

    def current(self) -> SyncStore:
        """This store in the application of the current request or application context."""
        try:
            stores = current_app.extensions["stores"]
        except RuntimeError:
            raise NoApplication(
                f"store {self.name!r} is used outside an application: call it while handling "
                "a request, or inside `with app.app_context():`"
            ) from None
        return stores[self.name]

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self.current(), attribute)
