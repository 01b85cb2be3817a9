"""Field types of a store and the JSON Schemas that describe their values.

The schemas built here are written into each generated service, which validates requests and
publishes its OpenAPI document from them: one definition serves both.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime

import jsonschema_rs

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FLOAT_MAX = 1.7976931348623157e308  # the largest double: larger numbers cannot be stored
SYSTEM_COLUMNS = ("id", "created_at", "updated_at")

_COMMON = {"type", "required", "default", "unique", "description", "example"}
FIELD_OPTIONS = {
    "string": _COMMON | {"enum", "min_length", "max_length", "pattern"},
    "text": _COMMON | {"min_length", "max_length", "pattern"},
    "integer": _COMMON | {"enum", "minimum", "maximum"},
    "number": _COMMON | {"enum", "minimum", "maximum"},
    "boolean": _COMMON,
    "date": _COMMON,
    "datetime": _COMMON,
    "uuid": _COMMON,
    "json": _COMMON - {"unique"},
}

_BASE = {
    "string": {"type": "string"},
    "text": {"type": "string"},
    "integer": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
    "number": {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "uuid": {"type": "string", "format": "uuid"},
    "json": {},
}
_KEYWORDS = {
    "min_length": "minLength",
    "max_length": "maxLength",
    "pattern": "pattern",
    "minimum": "minimum",
    "maximum": "maximum",
    "enum": "enum",
    "description": "description",
    "default": "default",
}


def field_json_schema(spec: dict) -> dict:
    """The JSON Schema of one field's value (null not allowed)."""
    schema = dict(_BASE[spec["type"]])
    for option, keyword in _KEYWORDS.items():
        if option in spec:
            schema[keyword] = spec[option]
    if "example" in spec:
        schema["examples"] = [spec["example"]]
    return schema


def _nullable(schema: dict) -> dict:
    """Optional fields also accept null, which clears them."""
    if not schema.get("type"):
        return schema  # json fields accept any value already
    nullable = dict(schema, type=[schema["type"], "null"])
    if "enum" in nullable:
        nullable["enum"] = [*nullable["enum"], None]
    return nullable


def store_schemas(fields: dict | None) -> dict:
    """Schemas of a store's record (a response), its input (create, PUT) and a patch."""
    system = {
        "id": {"type": "integer", "minimum": 1, "readOnly": True},
        "created_at": {"type": "string", "format": "date-time", "readOnly": True},
        "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
    }
    if fields is None:
        no_system_keys = {"not": {"enum": list(SYSTEM_COLUMNS)}}
        document = {"type": "object", "propertyNames": no_system_keys, "maxProperties": 1000}
        return {
            "record": {
                "type": "object",
                "properties": system,
                "required": list(SYSTEM_COLUMNS),
            },
            "input": document,
            "patch": document,
        }
    values = {}
    for name, spec in fields.items():
        schema = field_json_schema(spec)
        values[name] = schema if spec.get("required") else _nullable(schema)
    required = [name for name, spec in fields.items() if spec.get("required")]
    record = {
        "type": "object",
        "properties": {**system, **values},
        "required": list(SYSTEM_COLUMNS),
        "additionalProperties": False,
    }
    write = {"type": "object", "properties": values, "additionalProperties": False}
    return {
        "record": record,
        "input": {**write, "required": required} if required else write,
        "patch": write,
    }


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _is_date(value: str) -> bool:
    return bool(_DATE.match(value)) and _parses(date.fromisoformat, value)


def _is_datetime(value: str) -> bool:
    return bool(_DATETIME.match(value)) and _parses(datetime.fromisoformat, value)


def _is_uuid(value: str) -> bool:
    return _parses(uuid.UUID, value) and len(value) == 36


def _parses(parse, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


# The generated service's formats (app/validation.py): date (YYYY-MM-DD), date-time (RFC 3339
# with an offset) and uuid strings.
FORMATS = {"date": _is_date, "date-time": _is_datetime, "uuid": _is_uuid}


def value_validator(schema: dict) -> jsonschema_rs.Validator:
    """Judges field values as the generated service does: jsonschema-rs, ECMA-262 patterns
    and its strict formats; defaults, examples and test samples must pass it."""
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True, formats=FORMATS)


def pattern_error(pattern: str) -> str | None:
    """Why a field's pattern cannot be used, or None. Patterns are ECMA-262 regular
    expressions (JSON Schema's dialect), which the service's validator runs."""
    try:
        value_validator({"pattern": pattern})
    except jsonschema_rs.ValidationError:
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"not a valid regular expression: {exc}"
        return "not a valid regular expression in JSON Schema's dialect (ECMA-262)"
    return None
