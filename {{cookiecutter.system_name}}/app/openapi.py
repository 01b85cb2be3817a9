"""The OpenAPI 3.1 document of the service, built from its settings, the operations table
(app/operations.py) and the field-type registry: the request bodies published here are the
schemas that validate requests.
"""

from __future__ import annotations

from .field_types import filterable
from .field_types import store_schemas
from .operations import Operation
from .operations import offered
from .resources import IDEMPOTENCY_KEY
from .resources import IDEMPOTENCY_KEY_PATTERN
from .resources import IDEMPOTENT_REPLAYED
from .resources import MAX_ID
from .resources import Views
from .settings import EndpointSettings
from .settings import Settings

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
_SUCCESS = {"page": "A page of records", "record": "The record", "nothing": "Deleted"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _filter_schema(value_schema: dict) -> dict:
    """A field's value schema as a query parameter: the same constraints, without null."""
    schema = {key: item for key, item in value_schema.items() if key not in ("default", "examples")}
    if isinstance(schema.get("type"), list):
        kinds = [kind for kind in schema["type"] if kind != "null"]
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in schema:
        schema["enum"] = [item for item in schema["enum"] if item is not None]
    return schema


def _list_parameters(endpoint: EndpointSettings, fields: dict | None, patch: dict) -> list:
    """patch: the store's patch schema, whose properties are the fields' values."""
    values = patch.get("properties", {})
    return [
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
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        },
        *(
            {"name": name, "in": "query", "required": False, "schema": _filter_schema(values[name])}
            for name in filterable(fields)
        ),
    ]


def _operation(endpoint: EndpointSettings, operation: Operation, parameters: list) -> dict:
    store = endpoint.store
    success: dict = {"description": _SUCCESS[operation.answer]}
    if operation.answer != "nothing":
        answer = _ref(f"{store}_page" if operation.answer == "page" else store)
        success["content"] = _json(answer)
    if operation.idempotency_key:
        parameters = [*parameters, IDEMPOTENCY_KEY_PARAMETER]
        success["description"] = "Created, or found: created earlier with this Idempotency-Key"
        success["headers"] = {
            "Location": {"schema": {"type": "string"}},
            IDEMPOTENT_REPLAYED: {"schema": {"type": "string", "enum": ["true"]}},
        }
    responses = {str(operation.status): success}
    problems = getattr(Views, operation.name).problems
    for status in sorted({*problems, *((401,) if endpoint.auth == "api_key" else ())}):
        responses[str(status)] = PROBLEM
    document: dict = {
        "operationId": f"{endpoint.name}_{operation.name}",
        "summary": operation.summary.format(store=store),
        "tags": [endpoint.name],
    }
    if parameters:
        document["parameters"] = parameters
    if operation.body:
        body = _ref(f"{store}_{operation.body}")
        document["requestBody"] = {"required": True, "content": _json(body)}
    document["responses"] = responses
    if endpoint.auth == "api_key":
        document["security"] = [{"ApiKey": []}]
    return document


def _endpoint_paths(endpoint: EndpointSettings, fields: dict | None, patch: dict) -> dict:
    id_parameter = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    }
    collection: dict = {}
    item: dict = {"parameters": [id_parameter]}
    for operation in offered(endpoint.operations):
        parameters = []
        if operation.name == "list":
            parameters = _list_parameters(endpoint, fields, patch)
        path = item if operation.on_item else collection
        path[operation.method.lower()] = _operation(endpoint, operation, parameters)
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
    for endpoint in settings.endpoints.values():
        store = endpoint.store
        fields = settings.stores[store].fields
        own = store_schemas(fields)
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
        paths.update(_endpoint_paths(endpoint, fields, own["patch"]))
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
