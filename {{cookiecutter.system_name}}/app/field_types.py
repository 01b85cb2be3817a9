"""Field types: everything known about a kind of field, declared once.

Each FieldType below says what a value of its kind is (JSON Schema and format check), which
blueprint options it takes, how it is stored (SQL type per dialect, writer and reader), how a
query-string filter on it is parsed, and a sample value for generated tests. The service reads
it to validate, store, read and filter; the generator (blueprint_schema, in the template's
checkout) loads this same file to check blueprints and to write schemas and test samples.
Adding a type is adding one FieldType to TYPES, and its tests.

Standard library only (and jsonschema-rs), with no import of the rest of the service, so that
the generator can load it on its own.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import date
from datetime import datetime
from decimal import ROUND_CEILING
from decimal import ROUND_FLOOR
from decimal import Decimal
from decimal import InvalidOperation
from typing import Any

import jsonschema_rs

# Names of tables, fields and components: what may be written into SQL and Python. Match with
# fullmatch() (a trailing newline passes match()); the pattern is also the blueprint schema's.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
IDENTIFIER_RULE = "lower-case letters, digits and _, starting with a letter, at most 63 characters"
# Columns every record has, served read-only, with their JSON Schemas.
SYSTEM_COLUMN_SCHEMAS = {
    "id": {"type": "integer", "minimum": 1, "readOnly": True},
    "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
}
SYSTEM_COLUMNS = tuple(SYSTEM_COLUMN_SCHEMAS)
# Columns kept beside a record's fields (a POST's Idempotency-Key), never served.
INTERNAL_COLUMNS = ("idempotency_key", "idempotency_fingerprint")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FLOAT_MAX = 1.7976931348623157e308  # the largest double: larger numbers cannot be stored

Value = Any
Convert = Callable[[Any], Any]

# Options every type takes, and what the other options mean in JSON Schema.
COMMON_OPTIONS = frozenset(
    {"type", "required", "default", "unique", "index", "renamed_from", "description", "example"}
)
TEXT_OPTIONS = frozenset({"min_length", "max_length", "pattern"})
RANGE_OPTIONS = frozenset({"minimum", "maximum"})
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


# Options the database enforces or keeps, beside the column's type: required as NOT NULL, the
# checked ones as one named CHECK constraint each (app/persistence/sql.py words them), unique
# and index as indexes, default as the column's default. A pattern is checked by the service
# alone (its regular expressions are ECMA-262's, not the database's).
CHECKED_OPTIONS = ("enum", "minimum", "maximum", "min_length", "max_length")
DATABASE_OPTIONS = ("type", "required", "default", "unique", "index", *CHECKED_OPTIONS)
# Type changes a migration makes, keeping every stored value: {from: (to, ...)}. Any other
# is refused when the blueprint is generated.
WIDER_TYPES = {"integer": ("number",), "string": ("text",), "email": ("string", "text")}
# Integers above this lose digits as a number (a double): widening refuses a column holding one.
LARGEST_EXACT_DOUBLE = 2**53


def unchanged(value: Any) -> Any:
    """The conversion of a value that is stored as it is."""
    return value


def _unless_none(convert: Convert) -> Convert:
    return lambda value: None if value is None else convert(value)


@dataclass(frozen=True)
class FieldType:
    """One kind of field. Callables that take `spec` receive the field's blueprint options."""

    name: str
    schema: Callable[[dict], dict]  # JSON Schema of a value, before the field's own options
    options: frozenset[str]  # blueprint options it takes
    sql: dict[str, Callable[[dict], str]]  # column type, per dialect
    sample: Callable[[str, dict, int], Value]  # the index-th sample value of field `name`
    # Database parameter from a JSON value, and back; per dialect, absent: unchanged.
    writers: dict[str, Callable[[dict], Convert]] = field(default_factory=dict)
    readers: dict[str, Callable[[dict], Convert]] = field(default_factory=dict)
    # Query-string text -> JSON value; ValueError when the text is not one. None: no filter.
    parse_filter: Callable[[str], Value] | None = None
    # Options that schema() itself expresses, rather than their JSON Schema keywords.
    absorbs: frozenset[str] = frozenset()
    # The values a field allows, in words: said instead of a pattern the value does not match.
    describe: Callable[[dict], str] | None = None
    # Blueprint options of this type alone, with their JSON Schema (the blueprint format).
    own_options: dict[str, dict] = field(default_factory=dict)

    def json_schema(self, spec: dict) -> dict:
        """The JSON Schema of one field's value (null not allowed)."""
        schema = self.schema(spec)
        for option, keyword in _KEYWORDS.items():
            if option in spec and option not in self.absorbs:
                schema[keyword] = spec[option]
        if "example" in spec:
            schema["examples"] = [spec["example"]]
        return schema

    def writer(self, dialect: str, spec: dict) -> Convert:
        make = self.writers.get(dialect)
        return make(spec) if make else unchanged

    def reader(self, dialect: str, spec: dict) -> Convert:
        make = self.readers.get(dialect)
        return make(spec) if make else unchanged


# -- formats: checked the same way by the blueprint checker, the service and the samples -------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)
_EMAIL = re.compile(
    r"^(?=.{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
EMAIL_MAX_LENGTH = 254  # RFC 5321: the longest address a mail server accepts


def _parses(parse: Callable[[str], object], value: str) -> bool:
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


def _is_email(value: str) -> bool:
    return len(value) <= EMAIL_MAX_LENGTH and bool(_EMAIL.match(value))


def _is_decimal(value: str) -> bool:
    return _parses(_decimal, value)


# date (YYYY-MM-DD), date-time (RFC 3339 with an offset), uuid, email and decimal, checked
# strictly: a value that passes is one the database and Python accept (no leap second).
FORMATS: dict[str, Callable[[str], bool]] = {
    "date": _is_date,
    "date-time": _is_datetime,
    "uuid": _is_uuid,
    "email": _is_email,
    "decimal": _is_decimal,
}


def value_validator(schema: dict) -> jsonschema_rs.Validator:
    """A validator of values against `schema`: jsonschema-rs, ECMA-262 patterns, the formats
    above. The service validates requests with it; the generator checks defaults, examples
    and samples with it."""
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True, formats=FORMATS)


# -- conversions --------------------------------------------------------------------------------


def _datetime_text(value: datetime | str) -> str:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.astimezone(UTC).isoformat()


def _to_utc_text(value: Any) -> Any:
    return _datetime_text(value) if isinstance(value, (str, datetime)) else value


def _isoformat(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def _utc_isoformat(value: Any) -> Any:
    """A TIMESTAMPTZ as read, in UTC whatever the session's time zone (a pooler in front of
    PostgreSQL takes no per-connection settings)."""
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _postgres_json(spec: dict) -> Convert:
    from psycopg2.extras import Json  # only a PostgreSQL service loads psycopg2

    return _unless_none(Json)


def finite_number(text: str) -> float:
    """A number's text as a float; ValueError when it is too large for one (1e999)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _boolean(text: str) -> bool:
    try:
        return {"true": True, "false": False}[text]
    except KeyError:
        raise ValueError(text) from None


# -- decimal: exact numbers (money) carried as strings, so no value passes through a float ------
#
# Its JSON Schema is a pattern that accepts exactly the texts of the values the field allows:
# the digits its precision and scale leave room for, within its minimum and maximum, or one of
# its enum values (written with any number of trailing zeros). JSON Schema cannot compare
# numbers written as strings, so the pattern does it, and the OpenAPI document says exactly
# what the service accepts. Zero has no sign.

DEFAULT_PRECISION = 18
DEFAULT_SCALE = 2
MAX_PRECISION = 38  # as most databases and decimal libraries allow


def _decimal(text: str) -> Decimal:
    """A finite decimal, or ValueError (never decimal's own InvalidOperation)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text[:40]}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text}")
    return value


def _digits(spec: dict) -> tuple[int, int]:
    return spec.get("precision", DEFAULT_PRECISION), spec.get("scale", DEFAULT_SCALE)


def decimal_text(value: Decimal | str, scale: int) -> str:
    """The canonical text of a decimal: exactly `scale` digits after the point, no -0."""
    exact = Decimal(value).quantize(Decimal(1).scaleb(-scale))
    if exact.is_zero():
        exact = exact.copy_abs()
    return format(exact, "f")


def _group(pattern: str) -> str:
    return f"(?:{pattern})" if "|" in pattern else pattern


def _digit_range(low: str, high: str) -> str:
    """Pattern of the digit strings as long as low and high, from low to high."""
    if low == high:
        return low
    if low[0] == high[0]:
        return low[0] + _group(_digit_range(low[1:], high[1:]))
    rest = len(low) - 1
    low_whole, high_whole = low[1:] == "0" * rest, high[1:] == "9" * rest
    first, last = int(low[0]) + (not low_whole), int(high[0]) - (not high_whole)
    alternatives = []
    if not low_whole:
        alternatives.append(low[0] + _group(_digit_range(low[1:], "9" * rest)))
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        alternatives.append(digit + (f"[0-9]{{{rest}}}" if rest else ""))
    if not high_whole:
        alternatives.append(high[0] + _group(_digit_range("0" * rest, high[1:])))
    return "|".join(alternatives)


def _integer_range(low: int, high: int) -> str:
    """Pattern of the whole numbers from low to high (>= 0), without leading zeros."""
    alternatives = []
    whole_lengths: list[int] = []  # lengths whose every number is in range: [1-9][0-9]{a,b}
    for length in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (length - 1) if length > 1 else 0)
        end = min(high, 10**length - 1)
        if length > 1 and start == 10 ** (length - 1) and end == 10**length - 1:
            whole_lengths.append(length - 1)
        elif start <= end:
            alternatives.append(_digit_range(str(start), str(end)))
    if whole_lengths:
        least, most = whole_lengths[0], whole_lengths[-1]
        count = str(least) if least == most else f"{least},{most}"
        alternatives.append(f"[1-9][0-9]{{{count}}}")
    return "|".join(alternatives)


def _fraction_range(low: str, high: str) -> tuple[str, bool]:
    """Pattern of the digits after a point (1 to len(low) of them) whose value lies from
    .low to .high, and whether a number without a fraction (.0) does."""
    scale = len(low)
    if low == "0" * scale and high == "9" * scale:
        return f"[0-9]{{1,{scale}}}", True
    alternatives = []
    for length in range(1, scale + 1):
        least = low[:length]
        if low[length:].strip("0"):  # what is cut off counts: round the least up
            least = str(int(least) + 1).zfill(length)
        most = high[:length]
        if len(least) == length and least <= most:
            alternatives.append(_digit_range(least, most))
    return "|".join(alternatives), low == "0" * scale


def _magnitudes(low: Decimal, high: Decimal, scale: int) -> str | None:
    """Pattern of the unsigned texts of the values from low to high (>= 0, both multiples
    of the scale's step); None when there are none."""
    if low > high:
        return None

    def split(value: Decimal) -> tuple[int, str]:
        whole, _, fraction = decimal_text(value, scale).partition(".")
        return int(whole), fraction

    def texts(whole: str, fraction_low: str, fraction_high: str) -> str | None:
        if not scale:
            return _group(whole)
        fraction, bare = _fraction_range(fraction_low, fraction_high)
        if not fraction:
            return _group(whole) if bare else None
        point = rf"\.{_group(fraction)}"
        return _group(whole) + (f"(?:{point})?" if bare else point)

    (low_whole, low_fraction), (high_whole, high_fraction) = split(low), split(high)
    lowest, highest = "0" * scale, "9" * scale
    if low_whole == high_whole:
        pieces = [texts(str(low_whole), low_fraction, high_fraction)]
    else:
        # Whole numbers any of whose fractions is in range, and the two ends apart otherwise.
        first = low_whole + (low_fraction != lowest)
        last = high_whole - (high_fraction != highest)
        pieces = []
        if first != low_whole:
            pieces.append(texts(str(low_whole), low_fraction, highest))
        if first <= last:
            pieces.append(texts(_integer_range(first, last), lowest, highest))
        if last != high_whole:
            pieces.append(texts(str(high_whole), lowest, high_fraction))
    found = [piece for piece in pieces if piece]
    return "|".join(found) if found else None


def _equal_texts(value: Decimal, scale: int) -> str:
    """Pattern of the texts of one value: 5.00 as 5, 5.0 or 5.00."""
    text = decimal_text(value, scale)
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    significant = fraction.rstrip("0")
    if not significant:
        return f"{sign}{whole}" + (f"(?:\\.0{{1,{scale}}})?" if scale else "")
    zeros = scale - len(significant)
    return f"{sign}{whole}\\.{significant}" + (f"0{{0,{zeros}}}" if zeros else "")


def _one_of(spec: dict) -> str:
    return "one of " + ", ".join(f'"{item}"' for item in spec["enum"])


def _describe_decimal(spec: dict) -> str:
    precision, scale = _digits(spec)
    if "enum" in spec:
        return _one_of(spec)
    text = 'a decimal number written as a string ("19.90"), with at most '
    text += f"{precision - scale} digits before the point and {scale} after it"
    if "minimum" in spec:
        text += f", at least {spec['minimum']}"
    if "maximum" in spec:
        text += f", at most {spec['maximum']}"
    return text


def _decimal_schema(spec: dict) -> dict:
    precision, scale = _digits(spec)
    whole = max(precision - scale, 0)  # scale above precision: refused by the blueprint check
    step = Decimal(1).scaleb(-scale)
    largest = Decimal(10) ** whole - step
    if "enum" in spec:
        texts = [_equal_texts(_decimal(str(item)), scale) for item in spec["enum"]]
    else:
        low = max(_decimal(str(spec.get("minimum", -largest))), -largest)
        high = min(_decimal(str(spec.get("maximum", largest))), largest)
        texts = []
        if high >= 0:
            positive = max(low, Decimal(0)).quantize(step, ROUND_CEILING)
            texts.append(_magnitudes(positive, high.quantize(step, ROUND_FLOOR), scale))
        if low < 0:
            least = max(-high, step).quantize(step, ROUND_CEILING)  # no -0
            negative = _magnitudes(least, (-low).quantize(step, ROUND_FLOOR), scale)
            texts.append(f"-{_group(negative)}" if negative else None)
    found = [text for text in texts if text]
    pattern = f"^(?:{'|'.join(found)})$" if found else "^[^\\s\\S]$"  # none: matches nothing
    return {"type": "string", "format": "decimal", "pattern": pattern}


def _decimal_sample(name: str, spec: dict, index: int) -> Value:
    scale = _digits(spec)[1]
    low = _decimal(str(spec.get("minimum", 0)))
    value = low + index + Decimal("0.25")
    if "maximum" in spec and value > _decimal(str(spec["maximum"])):
        value = low
    return decimal_text(value, scale)


def _decimal_canonical(spec: dict) -> Convert:
    """To the canonical text: what SQLite stores, and what a PostgreSQL NUMERIC reads as."""
    scale = _digits(spec)[1]
    return _unless_none(lambda value: decimal_text(value, scale))


def _decimal_filter(text: str) -> str:
    _decimal(text)
    return text


# -- samples ------------------------------------------------------------------------------------


def _text_sample(name: str, spec: dict, index: int) -> str:
    low, high = spec.get("min_length", 0), spec.get("max_length", 10_000)
    text = f"{name} {index + 1}"[:high]
    return text + "x" * max(0, low - len(text))


def _number_in_range(spec: dict, index: int) -> float:
    low = spec.get("minimum", 0)
    high = spec.get("maximum", low + 1000)
    return min(max(low, index + 1), high)


def _integer_sample(name: str, spec: dict, index: int) -> int:
    value = _number_in_range(spec, index)
    return int(value) if float(value).is_integer() else int(spec.get("minimum", 0)) + 1


def _number_sample(name: str, spec: dict, index: int) -> float:
    value = _number_in_range(spec, index)
    return value + 0.5 if value + 0.5 <= spec.get("maximum", math.inf) else value


def _describe_email(spec: dict) -> str:
    if "enum" in spec:
        return _one_of(spec)
    longest = min(spec.get("max_length", EMAIL_MAX_LENGTH), EMAIL_MAX_LENGTH)
    text = f"an email address such as name@example.org, at most {longest} characters"
    if "pattern" in spec:
        text += f", matching {spec['pattern']}"
    return text


def _email_sample(name: str, spec: dict, index: int) -> str:
    return f"{name}.{index + 1}@example.com"


def _schema(base: dict) -> Callable[[dict], dict]:
    return lambda spec: dict(base)


def _in_both(make: Callable[[dict], Convert]) -> dict[str, Callable[[dict], Convert]]:
    """The same conversion for both dialects."""
    return {"postgresql": make, "sqlite": make}


def _sql(postgres: str, sqlite: str) -> dict[str, Callable[[dict], str]]:
    return {"postgresql": lambda spec: postgres, "sqlite": lambda spec: sqlite}


TYPES: dict[str, FieldType] = {
    kind.name: kind
    for kind in (
        FieldType(
            "string",
            _schema({"type": "string"}),
            COMMON_OPTIONS | TEXT_OPTIONS | {"enum"},
            _sql("TEXT", "TEXT"),
            _text_sample,
            parse_filter=unchanged,
        ),
        FieldType(
            "text",
            _schema({"type": "string"}),
            COMMON_OPTIONS | TEXT_OPTIONS,
            _sql("TEXT", "TEXT"),
            _text_sample,
        ),
        FieldType(
            "integer",
            _schema({"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}),
            COMMON_OPTIONS | RANGE_OPTIONS | {"enum"},
            _sql("BIGINT", "INTEGER"),
            _integer_sample,
            parse_filter=int,
        ),
        FieldType(
            "number",
            _schema({"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}),
            COMMON_OPTIONS | RANGE_OPTIONS | {"enum"},
            _sql("DOUBLE PRECISION", "REAL"),
            _number_sample,
            parse_filter=finite_number,
        ),
        FieldType(
            "decimal",
            _decimal_schema,
            COMMON_OPTIONS | RANGE_OPTIONS | {"enum", "precision", "scale"},
            {
                "postgresql": lambda spec: "NUMERIC({}, {})".format(*_digits(spec)),
                # Canonical text (decimal_text): exact, and equal values compare equal.
                "sqlite": lambda spec: "TEXT",
            },
            _decimal_sample,
            writers={
                "postgresql": lambda spec: _unless_none(Decimal),
                "sqlite": _decimal_canonical,
            },
            readers={"postgresql": _decimal_canonical},
            parse_filter=_decimal_filter,
            absorbs=frozenset({"minimum", "maximum", "enum"}),
            describe=_describe_decimal,
            own_options={
                "precision": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PRECISION,
                    "description": f"Digits in all; default {DEFAULT_PRECISION}.",
                },
                "scale": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_PRECISION,
                    "description": f"Digits after the point; default {DEFAULT_SCALE}.",
                },
            },
        ),
        FieldType(
            "boolean",
            _schema({"type": "boolean"}),
            COMMON_OPTIONS,
            _sql("BOOLEAN", "INTEGER"),
            lambda name, spec, index: index % 2 == 0,
            writers={"sqlite": lambda spec: _unless_none(int)},
            readers={"sqlite": lambda spec: _unless_none(bool)},
            parse_filter=_boolean,
        ),
        FieldType(
            "date",
            _schema({"type": "string", "format": "date"}),
            COMMON_OPTIONS,
            _sql("DATE", "TEXT"),
            lambda name, spec, index: f"2024-01-{index + 10:02d}",
            readers={"postgresql": lambda spec: _isoformat},
            parse_filter=lambda text: date.fromisoformat(text).isoformat(),
        ),
        FieldType(
            "datetime",
            _schema({"type": "string", "format": "date-time"}),
            COMMON_OPTIONS,
            _sql("TIMESTAMPTZ", "TEXT"),
            lambda name, spec, index: f"2024-01-{index + 10:02d}T12:30:00+00:00",
            writers=_in_both(lambda spec: _to_utc_text),
            readers={"postgresql": lambda spec: _utc_isoformat},
            parse_filter=lambda text: datetime.fromisoformat(text).isoformat(),
        ),
        FieldType(
            "uuid",
            _schema({"type": "string", "format": "uuid"}),
            COMMON_OPTIONS,
            _sql("UUID", "TEXT"),
            lambda name, spec, index: f"00000000-0000-4000-8000-{index + 1:012d}",
            writers=_in_both(lambda spec: _unless_none(lambda value: str(uuid.UUID(value)))),
            readers={"postgresql": lambda spec: _unless_none(str)},
            parse_filter=lambda text: str(uuid.UUID(text)),
        ),
        FieldType(
            "email",
            _schema({"type": "string", "format": "email", "maxLength": EMAIL_MAX_LENGTH}),
            COMMON_OPTIONS | TEXT_OPTIONS | {"enum"},
            _sql("TEXT", "TEXT"),
            _email_sample,
            parse_filter=unchanged,
            describe=_describe_email,
        ),
        FieldType(
            "json",
            _schema({}),
            COMMON_OPTIONS - {"unique", "index"},
            _sql("JSONB", "TEXT"),
            lambda name, spec, index: {"sample": index, "tags": ["a", "b"]},
            writers={"postgresql": _postgres_json, "sqlite": lambda spec: _unless_none(json.dumps)},
            readers={"sqlite": lambda spec: _unless_none(json.loads)},
        ),
    )
}


def field_type(spec: dict) -> FieldType:
    return TYPES[spec["type"]]


def filterable(fields: dict | None) -> dict[str, str]:
    """{field: type} of the fields a list can be filtered on, by equality."""
    return {
        name: spec["type"]
        for name, spec in (fields or {}).items()
        if field_type(spec).parse_filter is not None
    }


# -- the JSON Schemas of a store: one for records, one for create/replace bodies, one for patches


def _nullable(schema: dict) -> dict:
    """Optional fields also accept null, which clears them."""
    if not schema.get("type"):
        return schema  # json fields accept any value already
    nullable = dict(schema, type=[schema["type"], "null"])
    if "enum" in nullable:
        nullable["enum"] = [*nullable["enum"], None]
    return nullable


def store_schemas(fields: dict | None) -> dict:
    """Schemas of a store's record (a response), its input (create, PUT) and a patch; a store
    without fields keeps JSON documents."""
    system = dict(SYSTEM_COLUMN_SCHEMAS)
    if fields is None:
        no_system_keys = {"not": {"enum": list(SYSTEM_COLUMNS)}}
        document = {"type": "object", "propertyNames": no_system_keys, "maxProperties": 1000}
        record = {"type": "object", "properties": system, "required": list(SYSTEM_COLUMNS)}
        return {"record": record, "input": document, "patch": document}
    values = {}
    for name, spec in fields.items():
        schema = field_type(spec).json_schema(spec)
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


def explain(spec: dict, error: jsonschema_rs.ValidationError, limit: int = 200) -> str:
    """An error of a field's value, in words, at most `limit` characters: a type that
    describes its values says what it allows; otherwise the validator's message, with the
    value in it shortened so that the reason survives."""
    describe = field_type(spec).describe
    if describe:
        return f"must be {describe(spec)}"
    return shorten_message(error, limit)


def shorten_message(error: jsonschema_rs.ValidationError, limit: int = 200) -> str:
    """The validator's message (which starts with the value), the value cut to fit."""
    message = error.message
    if len(message) <= limit:
        return message
    value = json.dumps(error.instance, ensure_ascii=False)
    if message.startswith(value):
        reason = message[len(value) :]
        room = max(limit - len(reason) - 3, 20)
        message = value[:room] + "..." + reason
    return shorten(message, limit)


def shorten(text: str, limit: int = 200) -> str:
    """text, cut to at most `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def value_problems(spec: dict) -> Callable[[Value], list[str]]:
    """What is wrong with a value of this field (an empty list: nothing), as the service
    judges it."""
    validator = value_validator(field_type(spec).json_schema(spec))
    # One value breaking two rules of a type that describes itself: said once.
    return lambda value: list(dict.fromkeys(explain(spec, e) for e in validator.iter_errors(value)))
