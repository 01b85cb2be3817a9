"""Valid sample records for each store, used by the generated service's own tests.

Values are chosen per field type and constraint; a pattern is sampled from its parsed form
and every value is checked against the field's own JSON Schema before it is used.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable

from .service_modules import field_types

try:  # Python 3.11+
    import re._constants as regex_constants  # type: ignore[import-not-found]
    import re._parser as regex_parser  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as regex_constants  # type: ignore[no-redef]
    import sre_parse as regex_parser  # type: ignore[no-redef]

SAMPLES_PER_STORE = 3
_ATTEMPTS = 200
_PRINTABLE = string.ascii_letters + string.digits


class _Unsupported(Exception):
    pass


def _category(name: str) -> str:
    return {
        "CATEGORY_DIGIT": string.digits,
        "CATEGORY_NOT_DIGIT": string.ascii_letters,
        "CATEGORY_WORD": _PRINTABLE + "_",
        "CATEGORY_NOT_WORD": "-.,",
        "CATEGORY_SPACE": " ",
        "CATEGORY_NOT_SPACE": _PRINTABLE,
    }.get(name, "")


def _class_members(items: list) -> str:
    negate = False
    members = ""
    for op, value in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            members += chr(value)
        elif name == "RANGE":
            low, high = value
            members += "".join(chr(code) for code in range(low, min(high, low + 200) + 1))
        elif name == "CATEGORY":
            members += _category(str(value))
        else:
            raise _Unsupported(name)
    if negate:
        return "".join(char for char in _PRINTABLE if char not in members)
    return members


def _emit(parsed, rng: random.Random) -> str:
    out = []
    for op, value in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(value))
        elif name == "NOT_LITERAL":
            out.append(rng.choice([c for c in _PRINTABLE if ord(c) != value]))
        elif name == "ANY":
            out.append(rng.choice(_PRINTABLE))
        elif name == "IN":
            members = _class_members(value)
            if not members:
                raise _Unsupported("empty class")
            out.append(rng.choice(members))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, inner = value
            high = low + 3 if high == regex_constants.MAXREPEAT else high
            out.extend(
                _emit(inner, rng) for _ in range(rng.randint(low, max(low, min(high, low + 3))))
            )
        elif name == "SUBPATTERN":
            out.append(_emit(value[-1], rng))
        elif name == "BRANCH":
            out.append(_emit(rng.choice(value[1]), rng))
        elif name == "AT":
            continue
        else:
            raise _Unsupported(name)
    return "".join(out)


def _pattern_value(pattern: str, index: int, fits: Callable[[object], bool]) -> str | None:
    try:
        parsed = regex_parser.parse(pattern)
    except re.error:
        return None
    rng = random.Random(index)
    for _ in range(_ATTEMPTS):
        try:
            candidate = _emit(parsed, rng)
        except _Unsupported:
            return None
        if fits(candidate):
            return candidate
    return None


def _candidate(name: str, spec: dict, index: int, fits: Callable[[object], bool]) -> object:
    if "enum" in spec:
        return spec["enum"][index % len(spec["enum"])]
    if "pattern" in spec:
        return _pattern_value(spec["pattern"], index, fits)
    return field_types.field_type(spec).sample(name, spec, index)


def field_samples(name: str, spec: dict) -> list:
    """Distinct valid values for one field (fewer when its domain is smaller)."""
    kind = field_types.field_type(spec)
    fits = field_types.value_validator(kind.json_schema(spec)).is_valid  # once per field

    values: list = []
    if "example" in spec:
        values.append(spec["example"])
    for index in range(SAMPLES_PER_STORE * 4):
        value = _candidate(name, spec, index, fits)
        if value is not None and value not in values and fits(value):
            values.append(value)
        if len(values) >= SAMPLES_PER_STORE:
            break
    return values


def store_samples(fields: dict | None) -> tuple[list[dict], list[str]]:
    """Sample records of a store and the names of fields no valid value was found for."""
    if fields is None:
        return [{"title": f"note {index + 1}", "body": {"n": index}} for index in range(3)], []
    per_field = {name: field_samples(name, spec) for name, spec in fields.items()}
    missing = [name for name, values in per_field.items() if not values]
    count = SAMPLES_PER_STORE
    for name, spec in fields.items():
        if spec.get("unique") and per_field[name]:
            count = min(count, len(per_field[name]))
    records = []
    for index in range(count):
        records.append(
            {name: values[index % len(values)] for name, values in per_field.items() if values}
        )
    return records, missing
