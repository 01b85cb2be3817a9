"""The OpenAPI 3.1 document of the service, built from its settings and store schemas.

The request bodies published here are the schemas that validate requests (app/schemas.json).
"""

from __future__ import annotations

from .resources import IDEMPOTENCY_KEY
from .resources import IDEMPOTENCY_KEY_PATTERN
from .resources import IDEMPOTENT_REPLAYED
from .settings import EndpointSettings
from .settings import Settings
from .storage.store import FILTERABLE_TYPES
from .validation import store_schemas

PROBLEM = {"$ref": "#/components/responses/Problem"}
IDEMPOTENCY_KEY_PARAMETER = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": "Any unique string (a UUID, say) that makes a retried POST create at most "
    "one record: a retry with the same key and body answers with the record the first "
    "attempt created. Reused with a different body: 409.",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
_PROBLEM_STATUSES = {
    "list": ("400", "503", "504"),
    "create": ("400", "409", "413", "415", "422", "503", "504"),
    "get": ("404", "503", "504"),
    "replace": ("400", "404", "409", "413", "415", "422", "503", "504"),
    "update": ("400", "404", "409", "413", "415", "422", "503", "504"),
    "delete": ("404", "503", "504"),
}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(endpoint: EndpointSettings, operation: str, summary: str, **parts) -> dict:
    responses = parts.pop("responses")
    for status in _PROBLEM_STATUSES[operation]:
        responses[status] = PROBLEM
    if endpoint.auth == "api_key":
        responses["401"] = PROBLEM
    document = {
        "operationId": f"{endpoint.name}_{operation}",
        "summary": summary,
        "tags": [endpoint.name],
        **parts,
        "responses": responses,
    }
    if endpoint.auth == "api_key":
        document["security"] = [{"ApiKey": []}]
    return document


def _filter_schema(value_schema: dict) -> dict:
    """A field's value schema as a query parameter: the same constraints, without null."""
    schema = {key: item for key, item in value_schema.items() if key not in ("default", "examples")}
    if isinstance(schema.get("type"), list):
        kinds = [kind for kind in schema["type"] if kind != "null"]
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in schema:
        schema["enum"] = [item for item in schema["enum"] if item is not None]
    return schema


def _endpoint_paths(endpoint: EndpointSettings, fields: dict | None) -> dict:
    store = endpoint.store
    record, page = _ref(store), _ref(f"{store}_page")
    id_parameter = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    }
    values = store_schemas()[store]["patch"].get("properties", {})
    filters = [
        {"name": name, "in": "query", "required": False, "schema": _filter_schema(values[name])}
        for name, spec in (fields or {}).items()
        if spec["type"] in FILTERABLE_TYPES
    ]
    list_parameters = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": endpoint.max_page_size},
        },
        {
            "name": "after",
            "in": "query",
            "required": False,
            "description": "Return records with an id above this one (next_after of a page).",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
        *filters,
    ]
    write_body = {"required": True, "content": _json(_ref(f"{store}_input"))}
    patch_body = {"required": True, "content": _json(_ref(f"{store}_patch"))}
    collection: dict = {}
    item: dict = {"parameters": [id_parameter]}
    ops = endpoint.operations
    if "list" in ops:
        collection["get"] = _operation(
            endpoint,
            "list",
            f"List {store} records",
            parameters=list_parameters,
            responses={"200": {"description": "A page of records", "content": _json(page)}},
        )
    if "create" in ops:
        collection["post"] = _operation(
            endpoint,
            "create",
            f"Create a {store} record",
            parameters=[IDEMPOTENCY_KEY_PARAMETER],
            requestBody=write_body,
            responses={
                "201": {
                    "description": "Created, or found: created earlier with this Idempotency-Key",
                    "headers": {
                        "Location": {"schema": {"type": "string"}},
                        IDEMPOTENT_REPLAYED: {"schema": {"type": "string", "enum": ["true"]}},
                    },
                    "content": _json(record),
                }
            },
        )
    if "get" in ops:
        item["get"] = _operation(
            endpoint,
            "get",
            f"Get a {store} record",
            responses={"200": {"description": "The record", "content": _json(record)}},
        )
    if "update" in ops:
        item["put"] = _operation(
            endpoint,
            "replace",
            f"Replace a {store} record",
            requestBody=write_body,
            responses={"200": {"description": "The record", "content": _json(record)}},
        )
        item["patch"] = _operation(
            endpoint,
            "update",
            f"Change fields of a {store} record",
            requestBody=patch_body,
            responses={"200": {"description": "The record", "content": _json(record)}},
        )
    if "delete" in ops:
        item["delete"] = _operation(
            endpoint,
            "delete",
            f"Delete a {store} record",
            responses={"204": {"description": "Deleted"}},
        )
    paths = {}
    if collection:
        paths[endpoint.path] = collection
    if len(item) > 1:
        paths[f"{endpoint.path}/{{id}}"] = item
    return paths


def _service_paths() -> dict:
    text = {"text/plain": {"schema": {"type": "string"}}}
    status = _json(
        {
            "type": "object",
            "properties": {"status": {"type": "string"}, "checks": {"type": "object"}},
            "required": ["status"],
        }
    )
    return {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: the process serves requests",
                "tags": ["service"],
                "responses": {"200": {"description": "Alive", "content": status}},
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: every store answers in time and can write",
                "tags": ["service"],
                "responses": {
                    "200": {"description": "Ready", "content": status},
                    "503": {
                        "description": "A store does not answer in time or cannot write",
                        "content": status,
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "tags": ["service"],
                "responses": {"200": {"description": "Metrics", "content": text}},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["service"],
                "responses": {
                    "200": {"description": "OpenAPI document", "content": _json({"type": "object"})}
                },
            }
        },
    }


def build_document(settings: Settings) -> dict:
    schemas: dict = {}
    paths = _service_paths()
    all_schemas = store_schemas()
    for endpoint in settings.endpoints.values():
        store = endpoint.store
        own = all_schemas[store]
        schemas[store] = own["record"]
        schemas[f"{store}_input"] = own["input"]
        schemas[f"{store}_patch"] = own["patch"]
        schemas[f"{store}_page"] = {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": _ref(store)},
                "next_after": {"type": ["integer", "null"]},
            },
            "required": ["items", "next_after"],
        }
        paths.update(_endpoint_paths(endpoint, settings.stores[store].fields))
    problem = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "request_id": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["title", "status"],
    }
    components: dict = {
        "schemas": {**schemas, "Problem": problem},
        "responses": {
            "Problem": {
                "description": "An error, as RFC 9457 problem details",
                "content": {"application/problem+json": {"schema": _ref("Problem")}},
            }
        },
    }
    if any(endpoint.auth == "api_key" for endpoint in settings.endpoints.values()):
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": settings.system_name,
            "version": settings.version,
            "description": settings.description,
        },
        "paths": paths,
        "components": components,
    }
