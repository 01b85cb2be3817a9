"""The operations an API endpoint can offer, one row each.

The routes (app/resources.py) and the OpenAPI document (app/openapi.py) are both built from
this table; which problems an operation answers is said by its view (resources.answers).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    name: str  # the Flask endpoint, and the end of the OpenAPI operationId
    method: str
    on_item: bool  # on <path>/<id>; else on <path>
    status: int  # of a success
    enabled_by: str  # the blueprint operation that offers it
    summary: str  # {store}: the store's name
    answer: str  # what a success holds: "page", "record" or "nothing"
    body: str | None = None  # the request body's schema: "input", "patch" or none
    idempotency_key: bool = False  # honours an Idempotency-Key header


OPERATIONS = (
    Operation("list", "GET", False, 200, "list", "List {store} records", "page"),
    Operation(
        "create",
        "POST",
        False,
        201,
        "create",
        "Create a {store} record",
        "record",
        body="input",
        idempotency_key=True,
    ),
    Operation("get", "GET", True, 200, "get", "Get a {store} record", "record"),
    Operation(
        "replace", "PUT", True, 200, "update", "Replace a {store} record", "record", body="input"
    ),
    Operation(
        "update",
        "PATCH",
        True,
        200,
        "update",
        "Change fields of a {store} record",
        "record",
        body="patch",
    ),
    Operation("delete", "DELETE", True, 204, "delete", "Delete a {store} record", "nothing"),
)


def offered(operations: tuple[str, ...] | list[str]) -> list[Operation]:
    """The operations an endpoint offers, given the blueprint operations it lists."""
    return [operation for operation in OPERATIONS if operation.enabled_by in operations]
