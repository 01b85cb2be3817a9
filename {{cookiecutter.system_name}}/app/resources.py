"""CRUD routes of an API endpoint over its store (a Flask Blueprint).

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
from collections.abc import Callable
from functools import cache

from flask import Blueprint
from flask import Response
from flask import request
from flask.blueprints import BlueprintSetupState

from .field_types import TYPES
from .operations import offered
from .persistence import SyncStore
from .problems import DATABASE_PROBLEMS
from .problems import Problem
from .security import require_api_key
from .settings import EndpointSettings
from .validation import BODY_PROBLEMS
from .validation import BodyValidator
from .validation import json_body

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"  # on the answer to a retry: "true"
IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,255}$"  # visible ASCII; also in the OpenAPI document
_IDEMPOTENCY_KEY_VALUE = re.compile(IDEMPOTENCY_KEY_PATTERN)
ID_RULE = "<int:record_id>"
MAX_ID = 2**63 - 1
LIST_PARAMETERS = ("limit", "after")


def answers(*statuses: int) -> Callable[[Callable], Callable]:
    """Declare the problem statuses a view answers, besides the database's (503, 504): the
    OpenAPI document lists them."""

    def declare(view: Callable) -> Callable:
        view.problems = tuple(sorted({*statuses, *DATABASE_PROBLEMS}))
        return view

    return declare


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


def _parse_filter(name: str, kind: str, raw: str) -> object:
    """A query-string filter value as the field's type; a 400 problem when it is not one."""
    try:
        return TYPES[kind].parse_filter(raw)
    except ValueError:
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


def endpoint_routes(name: str) -> Blueprint:
    """The routes of endpoint `name`: added as its settings say when an app registers them."""
    routes = Blueprint(name, __name__)
    routes.record(lambda state: _add_routes(state, name))
    return routes


def _add_routes(state: BlueprintSetupState, name: str) -> None:
    """Add a route for each operation the endpoint offers, over the registering app's store."""
    settings: EndpointSettings = state.app.config["SETTINGS"].endpoints[name]
    store: SyncStore = state.app.extensions["stores"][settings.store]
    views = Views(settings, store)
    for operation in offered(settings.operations):
        view = getattr(views, operation.name)
        if settings.auth == "api_key":
            view = require_api_key(view)
        rule = f"{settings.path}/{ID_RULE}" if operation.on_item else settings.path
        state.add_url_rule(
            rule, endpoint=operation.name, view_func=view, methods=[operation.method]
        )


class Views:
    """The views of one endpoint over its store, one per operation (app/operations.py)."""

    def __init__(self, settings: EndpointSettings, store: SyncStore) -> None:
        self.settings = settings
        self.store = store

    # Validators are built on first use (then kept), not at start-up.
    @cache  # noqa: B019 - one Views per endpoint and application, kept as long as the app
    def body_validator(self, kind: str) -> BodyValidator:
        return BodyValidator.of_store(self.store.fields, kind)

    @answers(400, 414)  # 414: a query longer than Gunicorn's request line (limit_request_line)
    def list(self) -> Response:
        args = request.args
        filterable = self.store.filterable
        unknown = [key for key in args if key not in LIST_PARAMETERS and key not in filterable]
        if unknown:
            known = ", ".join([*LIST_PARAMETERS, *filterable])
            detail = f"unknown query parameter {unknown[0]!r}; known: {known}"
            raise Problem(400, "Bad Request", detail, [{"parameter": unknown[0], "detail": detail}])
        limit = self.settings.page_size
        if "limit" in args:
            limit = _parse_int("limit", args["limit"], 1, self.settings.max_page_size)
        after = _parse_int("after", args["after"], 0, MAX_ID) if "after" in args else 0
        filters = {
            key: _parse_filter(key, filterable[key], args[key]) for key in args if key in filterable
        }
        # A filter value must be a valid field value; a plain page request validates nothing.
        invalid = self.body_validator("patch").errors(filters) if filters else []
        if invalid:
            errors = [
                {"parameter": e["pointer"].lstrip("/"), "detail": e["detail"]} for e in invalid
            ]
            raise Problem(400, "Bad Request", "invalid filter value", errors)
        items, next_after = self.store.list(limit=limit, after=after, filters=filters)
        return _json({"items": items, "next_after": next_after})

    @answers(*BODY_PROBLEMS, 409)  # 400 also for a bad Idempotency-Key, 409 for its reuse
    def create(self) -> Response:
        body = self.body_validator("input").check(json_body(request))
        key = _idempotency_key()
        if key is None:
            record, replayed = self.store.create(body), False
        else:
            record, replayed = self.store.create_once(body, key)
        headers = {"Location": f"{self.settings.path}/{record['id']}"}
        if replayed:
            headers[IDEMPOTENT_REPLAYED] = "true"
        return _json(record, 201, headers)

    @answers(404)
    def get(self, record_id: int) -> Response:
        _existing_id(record_id)
        return self._found(record_id, self.store.get(record_id))

    @answers(*BODY_PROBLEMS, 404, 409)
    def replace(self, record_id: int) -> Response:
        _existing_id(record_id)
        body = self.body_validator("input").check(json_body(request))
        return self._found(record_id, self.store.replace(record_id, body))

    @answers(*BODY_PROBLEMS, 404, 409)
    def update(self, record_id: int) -> Response:
        _existing_id(record_id)
        body = self.body_validator("patch").check(json_body(request))
        return self._found(record_id, self.store.update(record_id, body))

    @answers(404)
    def delete(self, record_id: int) -> Response:
        _existing_id(record_id)
        if not self.store.delete(record_id):
            raise _not_found(record_id)
        return Response(status=204)

    @staticmethod
    def _found(record_id: int, record: dict | None) -> Response:
        if record is None:
            raise _not_found(record_id)
        return _json(record)
