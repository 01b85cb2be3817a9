"""The service's package. create_app() (app.factory) builds the Flask application.

Importing a submodule such as app.settings loads nothing else: gunicorn.conf.py reads the
settings in the master without importing Flask, the stores or prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .factory import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
