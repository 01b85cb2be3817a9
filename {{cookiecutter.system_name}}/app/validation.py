"""Request bodies: strict JSON parsing and validation against the store's JSON Schemas.

The schemas come from the field-type registry (app/field_types.py), from the same field
specs as the ones published in /openapi.json.
"""

from __future__ import annotations

import json

from flask import Request
from jsonschema_rs import ValidationErrorKind as ErrorKind

from .field_types import explain
from .field_types import finite_number
from .field_types import shorten
from .field_types import shorten_message
from .field_types import store_schemas
from .field_types import value_validator
from .problems import Problem

MAX_ERRORS = 50
# What reading a request body may answer: 400 not JSON, 413 too large (MAX_CONTENT_LENGTH),
# 415 not sent as JSON, 422 fields that are not valid.
BODY_PROBLEMS = (400, 413, 415, 422)


class BodyValidator:
    """Validates one kind of request body (input or patch) of one store.

    jsonschema-rs validates a body in a few microseconds, where a pure-Python validator
    takes about 50; its patterns follow ECMA-262, as JSON Schema and OpenAPI say they do.
    """

    def __init__(self, schema: dict, fields: dict | None = None) -> None:
        self._validator = value_validator(schema)
        self._fields = fields or {}  # their specs word the errors of their values

    @classmethod
    def of_store(cls, fields: dict | None, kind: str) -> BodyValidator:
        """The validator of a store's "input" (create, PUT) or "patch" bodies."""
        return cls(store_schemas(fields)[kind], fields)

    def errors(self, body: object) -> list[dict]:
        found = []
        for error in self._validator.iter_errors(body):
            pointer = "".join(f"/{_escape(part)}" for part in error.instance_path)
            kind = error.kind
            if isinstance(kind, ErrorKind.AdditionalProperties):
                for name in sorted(kind.unexpected):
                    found.append(
                        {"pointer": f"{pointer}/{_escape(name)}", "detail": "unknown field"}
                    )
            elif isinstance(kind, ErrorKind.Required):
                found.append(
                    {"pointer": f"{pointer}/{_escape(kind.property)}", "detail": "required"}
                )
            else:
                path = error.instance_path
                spec = self._fields.get(path[0]) if len(path) == 1 else None
                detail = explain(spec, error) if spec else shorten_message(error)
                problem = {"pointer": pointer, "detail": detail}
                if problem not in found:  # one value breaking two rules said in words once
                    found.append(problem)
            if len(found) >= MAX_ERRORS:
                break
        return found[:MAX_ERRORS]

    def check(self, body: object) -> dict:
        if not isinstance(body, dict):
            raise Problem(
                422,
                "Unprocessable Content",
                "the body must be a JSON object",
                [{"pointer": "", "detail": "not an object"}],
            )
        errors = self.errors(body)
        if errors:
            raise Problem(422, "Unprocessable Content", "the body has invalid fields", errors)
        return body


def _escape(part: object) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_body(request: Request) -> object:
    """The request's JSON document, or a 400/415 problem saying what is wrong with it."""
    if not request.is_json:
        raise Problem(
            415,
            "Unsupported Media Type",
            "send the body as application/json",
            headers={"Accept": "application/json"},
        )
    raw = request.get_data(cache=False)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, "Bad Request", f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_float=finite_number, parse_constant=_no_constants)
    except RecursionError:
        raise Problem(400, "Bad Request", "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise Problem(
            400, "Bad Request", f"the body is not valid JSON: {shorten(str(exc))}"
        ) from None
    # Strict UTF-8 decoding refuses encoded surrogates and JSON refuses raw control characters,
    # so NUL and lone surrogates can only come from \u escapes: most bodies need no walk.
    if "\\u" in text:
        _check_storable_text(document)
    return document


def _check_storable_text(document: object) -> None:
    """Refuse text no database stores faithfully: NUL characters and unpaired surrogates."""
    bad = []
    pending: list[tuple[str, object]] = [("", document)]
    while pending and len(bad) < MAX_ERRORS:
        pointer, value = pending.pop()
        if isinstance(value, dict):
            pending.extend((f"{pointer}/{_escape(key)}", item) for key, item in value.items())
            pending.extend((f"{pointer}/{_escape(key)}", key) for key in value)
        elif isinstance(value, list):
            pending.extend((f"{pointer}/{index}", item) for index, item in enumerate(value))
        elif isinstance(value, str) and (
            "\x00" in value or not value.isascii() and _unpaired(value)
        ):
            bad.append({"pointer": pointer, "detail": "NUL character or unpaired surrogate"})
    if bad:
        raise Problem(
            422, "Unprocessable Content", "the body holds text that cannot be stored", bad
        )


def _unpaired(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
