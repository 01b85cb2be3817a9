"""Request bodies: strict JSON parsing and validation against the store's JSON Schemas.

The schemas (app/schemas.json) are the ones published in /openapi.json.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import date
from datetime import datetime
from functools import cache
from pathlib import Path

import jsonschema_rs
from flask import Request
from jsonschema_rs import ValidationErrorKind as ErrorKind

from .problems import Problem

SCHEMAS_FILE = Path(__file__).with_name("schemas.json")
MAX_ERRORS = 50

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)


@cache
def store_schemas() -> dict:
    """{store: {"record": ..., "input": ..., "patch": ...}} as generated from the blueprint."""
    return json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))


def _parses(parse, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    return bool(_DATE.match(value)) and _parses(date.fromisoformat, value)


def _is_datetime(value: str) -> bool:
    return bool(_DATETIME.match(value)) and _parses(datetime.fromisoformat, value)


def _is_uuid(value: str) -> bool:
    return len(value) == 36 and _parses(uuid.UUID, value)


# date (YYYY-MM-DD), date-time (RFC 3339 with an offset) and uuid, checked strictly: a value
# that passes is one the database and Python's datetime accept (no leap second, no 24:00).
FORMATS = {"date": _is_date, "date-time": _is_datetime, "uuid": _is_uuid}


class BodyValidator:
    """Validates one kind of request body (input or patch) of one store.

    jsonschema-rs validates a body in a few microseconds, where a pure-Python validator
    takes about 50; its patterns follow ECMA-262, as JSON Schema and OpenAPI say they do.
    """

    def __init__(self, schema: dict) -> None:
        self._validator = jsonschema_rs.Draft202012Validator(
            schema, validate_formats=True, formats=FORMATS
        )

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
                found.append({"pointer": pointer, "detail": _short(error.message)})
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


@cache
def body_validator(store: str, kind: str) -> BodyValidator:
    """The validator of a store's "input" (create, PUT) or "patch" bodies, built once."""
    return BodyValidator(store_schemas()[store][kind])


def _escape(part: object) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


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
        document = json.loads(text, parse_float=_finite, parse_constant=_no_constants)
    except RecursionError:
        raise Problem(400, "Bad Request", "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise Problem(
            400, "Bad Request", f"the body is not valid JSON: {_short(str(exc))}"
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
