"""Service routes: /health (liveness), /ready (readiness) and /openapi.json."""

from __future__ import annotations

import json
import logging

from flask import Blueprint
from flask import Response
from flask import current_app

from .storage import StorageError

log = logging.getLogger(__name__)
blueprint = Blueprint("_service", __name__)


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


@blueprint.get("/health")
def health() -> Response:
    """Liveness: answers without touching any dependency."""
    return _json({"status": "ok"})


@blueprint.get("/ready")
def ready() -> Response:
    """Readiness: every store answers a query; 503 names the stores that do not."""
    checks = {}
    for store in current_app.extensions["stores"].values():
        try:
            store.ping()
        except StorageError as exc:
            log.warning("store %s is not ready: %s", store.name, exc)
            checks[store.name] = "unavailable"
        else:
            checks[store.name] = "ok"
    failed = sorted(name for name, result in checks.items() if result != "ok")
    if failed:
        return _json({"status": "unavailable", "failed": failed, "checks": checks}, 503)
    return _json({"status": "ok", "checks": checks})


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return Response(current_app.config["OPENAPI_JSON"], mimetype="application/json")
