"""CRUD routes of an API endpoint over its store, as a Flask Blueprint.

GET    <path>          list: ?limit=&after=<id>&<field>=<value> (keyset pagination)
POST   <path>          create: 201 with Location
GET    <path>/<id>     get
PUT    <path>/<id>     replace (required fields needed)
PATCH  <path>/<id>     merge (no field required)
DELETE <path>/<id>     delete: 204
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import date
from datetime import datetime
from functools import partial
from typing import Any

from flask import Blueprint
from flask import Response
from flask import request
from flask.blueprints import BlueprintSetupState

from .problems import Problem
from .security import require_api_key
from .settings import EndpointSettings
from .storage import SyncStore
from .validation import body_validator
from .validation import json_body

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"  # on the answer to a retry: "true"
IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,255}$"  # visible ASCII; also in the OpenAPI document
_IDEMPOTENCY_KEY_VALUE = re.compile(IDEMPOTENCY_KEY_PATTERN)
ID_RULE = "<int:record_id>"
MAX_ID = 2**63 - 1
LIST_PARAMETERS = ("limit", "after")


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json", headers=headers)


def _not_found(record_id: int) -> Problem:
    return Problem(404, "Not Found", f"no record with id {record_id}")


def _existing_id(record_id: int) -> None:
    """Ids beyond 64 bits cannot exist (and would overflow the database's integer)."""
    if record_id > MAX_ID:
        raise _not_found(record_id)


def _parse_int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        detail = f"query parameter {name} must be a whole number from {low} to {high}"
        raise Problem(400, "Bad Request", detail, [{"parameter": name, "detail": detail}])
    return value


def _parse_filter(name: str, kind: str, raw: str) -> Any:
    """A query-string filter value as the field's type; a 400 problem when it is not one."""
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "boolean":
            return {"true": True, "false": False}[raw]
        if kind == "date":
            return date.fromisoformat(raw).isoformat()
        if kind == "datetime":
            return datetime.fromisoformat(raw).isoformat()
        if kind == "uuid":
            return str(uuid.UUID(raw))
        return raw
    except (ValueError, KeyError):
        detail = f"query parameter {name} must be a {kind}"
        raise Problem(400, "Bad Request", detail, [{"parameter": name, "detail": detail}]) from None


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY_VALUE.match(key):
        detail = f"header {IDEMPOTENCY_KEY} must be 1 to 255 visible ASCII characters"
        raise Problem(400, "Bad Request", detail, [{"header": IDEMPOTENCY_KEY, "detail": detail}])
    return key


def resource_blueprint(name: str) -> Blueprint:
    """The Blueprint of endpoint `name`; routes follow its settings once an app registers it."""
    blueprint = Blueprint(name, __name__)
    blueprint.record(lambda state: _add_routes(state, name))
    return blueprint


def _add_routes(state: BlueprintSetupState, name: str) -> None:
    """Add the routes the endpoint's settings ask for, over the registering app's store."""
    settings: EndpointSettings = state.app.config["SETTINGS"].endpoints[name]
    store: SyncStore = state.app.extensions["stores"][settings.store]
    # Validators are built on first use (then cached), not at start-up.
    create_body = partial(body_validator, settings.store, "input")
    patch_body = partial(body_validator, settings.store, "patch")
    path = settings.path
    filterable = store.filterable

    def add(rule: str, operation: str, method: str, view: Callable) -> None:
        if settings.auth == "api_key":
            view = require_api_key(view)
        state.add_url_rule(rule, endpoint=operation, view_func=view, methods=[method])

    def list_records() -> Response:
        args = request.args
        unknown = [key for key in args if key not in LIST_PARAMETERS and key not in filterable]
        if unknown:
            known = ", ".join([*LIST_PARAMETERS, *filterable])
            detail = f"unknown query parameter {unknown[0]!r}; known: {known}"
            raise Problem(400, "Bad Request", detail, [{"parameter": unknown[0], "detail": detail}])
        limit = settings.page_size
        if "limit" in args:
            limit = _parse_int("limit", args["limit"], 1, settings.max_page_size)
        after = _parse_int("after", args["after"], 0, 2**63 - 1) if "after" in args else 0
        filters = {
            key: _parse_filter(key, filterable[key], args[key]) for key in args if key in filterable
        }
        # A filter value must be a valid field value; a plain page request validates nothing.
        invalid = patch_body().errors(filters) if filters else []
        if invalid:
            errors = [
                {"parameter": e["pointer"].lstrip("/"), "detail": e["detail"]} for e in invalid
            ]
            raise Problem(400, "Bad Request", "invalid filter value", errors)
        items, next_after = store.list(limit=limit, after=after, filters=filters)
        return _json({"items": items, "next_after": next_after})

    def create_record() -> Response:
        body = create_body().check(json_body(request))
        key = _idempotency_key()
        if key is None:
            record, replayed = store.create(body), False
        else:
            record, replayed = store.create_once(body, key)
        headers = {"Location": f"{path}/{record['id']}"}
        if replayed:
            headers[IDEMPOTENT_REPLAYED] = "true"
        return _json(record, 201, headers)

    def get_record(record_id: int) -> Response:
        _existing_id(record_id)
        record = store.get(record_id)
        if record is None:
            raise _not_found(record_id)
        return _json(record)

    def replace_record(record_id: int) -> Response:
        _existing_id(record_id)
        record = store.replace(record_id, create_body().check(json_body(request)))
        if record is None:
            raise _not_found(record_id)
        return _json(record)

    def update_record(record_id: int) -> Response:
        _existing_id(record_id)
        record = store.update(record_id, patch_body().check(json_body(request)))
        if record is None:
            raise _not_found(record_id)
        return _json(record)

    def delete_record(record_id: int) -> Response:
        _existing_id(record_id)
        if not store.delete(record_id):
            raise _not_found(record_id)
        return Response(status=204)

    item = f"{path}/{ID_RULE}"
    operations = settings.operations
    if "list" in operations:
        add(path, "list", "GET", list_records)
    if "create" in operations:
        add(path, "create", "POST", create_record)
    if "get" in operations:
        add(item, "get", "GET", get_record)
    if "update" in operations:
        add(item, "replace", "PUT", replace_record)
        add(item, "update", "PATCH", update_record)
    if "delete" in operations:
        add(item, "delete", "DELETE", delete_record)
    if settings.cors_origins:
        pattern = rf"^{re.escape(path)}(/.*)?$"
        from flask_cors import CORS  # only services that list origins load it

        CORS(state.app, resources={pattern: {"origins": list(settings.cors_origins)}})
