"""Service routes: /health (liveness), /ready (readiness) and /openapi.json.

The worker (app.worker) answers the probes on threads of their own, so they never wait
behind requests that are stuck on the database.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable

from flask import Blueprint
from flask import Response
from flask import current_app

from . import deadline
from . import lifecycle
from .persistence import DeadlineExceeded
from .persistence import StorageError
from .probes import HEALTH_PATH
from .probes import READY_PATH

log = logging.getLogger(__name__)
routes = Blueprint("_service", __name__)


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


@routes.get(HEALTH_PATH)
def health() -> Response:
    """Liveness: answers without touching any dependency."""
    return _json({"status": "ok"})


@routes.get(READY_PATH)
def ready() -> Response:
    """Readiness: every store answers a query within READY_TIMEOUT_MS and can write; 503
    names the stores that cannot, each with its reason."""
    if lifecycle.draining():  # SIGTERM received: a balancer stops routing here
        return _json({"status": "draining"}, 503)
    timeout_ms = current_app.config["SETTINGS"].ready_timeout_ms
    # Whether the database takes writes is asked once, whatever the number of stores on it.
    write_problem = functools.cache(current_app.extensions["database"].write_problem)
    checks = {}
    with deadline.limit(timeout_ms / 1000):
        for store in current_app.extensions["stores"].values():
            checks[store.name] = _check(store, write_problem, timeout_ms)
    failed = sorted(name for name, result in checks.items() if result != "ok")
    if failed:
        return _json({"status": "unavailable", "failed": failed, "checks": checks}, 503)
    return _json({"status": "ok", "checks": checks})


def _check(store, write_problem: Callable[[], str | None], timeout_ms: int) -> str:
    """Either "ok" or why the store is not ready (details are logged, not served)."""
    try:
        store.ping()
        problem = write_problem()
    except DeadlineExceeded:
        log.warning("store %s is not ready: no answer within %d ms", store.name, timeout_ms)
        return f"unavailable: no answer within {timeout_ms} ms"
    except StorageError as exc:
        log.warning("store %s is not ready: %s", store.name, exc)
        return f"unavailable: {exc if exc.served else 'the database cannot be reached'}"
    if problem:
        log.warning("store %s cannot write: %s", store.name, problem)
        return f"cannot write: {problem}"
    return "ok"


@routes.get("/openapi.json")
def openapi() -> Response:
    return Response(current_app.config["OPENAPI_JSON"], mimetype="application/json")
