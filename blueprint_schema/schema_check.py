"""Check a blueprint document against blueprint.schema.json and word the errors for people."""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from .diagnostics import Report

if TYPE_CHECKING:
    import jsonschema

SCHEMA_FILE = "blueprint.schema.json"


@cache
def schema() -> dict:
    """blueprint.schema.json, completed from the service's field-type registry: the field
    types, their own options, and the rule for names."""
    from .service_modules import field_types

    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    document = json.loads(text)
    definitions = document["$defs"]
    definitions["name"]["pattern"] = field_types.IDENTIFIER.pattern
    definitions["name"]["errorMessage"] = "must be " + field_types.IDENTIFIER_RULE
    properties = definitions["field"]["properties"]
    properties["type"]["enum"] = list(field_types.TYPES)
    for kind in field_types.TYPES.values():
        properties.update(kind.own_options)
    return document


def _is_whole_number(checker: object, instance: object) -> bool:
    """Settings such as max_length take 5, not 5.0 (which JSON Schema would accept)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator() -> jsonschema.protocols.Validator:
    # Imported here, not at the top: the post-generation hook imports this package but checks
    # nothing (it gets the checked model), and jsonschema takes a tenth of a second to import.
    import jsonschema

    strict = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_whole_number)
    validator_class = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, type_checker=strict
    )
    return validator_class(schema())


def short(value: object, limit: int = 60) -> str:
    """A value as it would be written in the blueprint, cut to a readable length."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggestion(word: object, choices: list[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The specific causes behind a combined (anyOf/oneOf/allOf) error."""
    if error.context:
        return [leaf for sub in error.context for leaf in _leaf_errors(sub)]
    return [error]


def check(document: object, report: Report) -> None:
    """Report every schema violation of document, each at its own place."""
    for error in _validator().iter_errors(document):
        for leaf in _leaf_errors(error):
            _report(leaf, report)


def _report(error: jsonschema.ValidationError, report: Report) -> None:
    path = tuple(error.absolute_path)
    as_key = "propertyNames" in error.absolute_schema_path
    if as_key:  # the offending value is a mapping key
        path = path + (error.instance,)
    kind = error.validator
    rule = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    if kind == "additionalProperties":
        known = sorted(rule.get("properties", {}))
        for key in sorted(set(value) - set(known), key=str):
            listed = ", ".join(known)
            report.error(
                path + (key,),
                f"unknown key {key!r}{suggestion(key, known)}; allowed here: {listed}",
                key=True,
            )
    elif kind == "required":
        missing = [name for name in error.validator_value if name not in value]
        for name in missing:
            report.error(path, f"missing required key {name!r}")
    elif kind == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        names = " or ".join(_TYPE_NAMES.get(name, name) for name in wanted)
        report.error(path, f"must be {names}, not {short(value)}")
    elif kind in ("enum", "const"):
        allowed = error.validator_value if kind == "enum" else [error.validator_value]
        listed = ", ".join(short(item) for item in allowed)
        hint = suggestion(value, [item for item in allowed if isinstance(item, str)])
        report.error(path, f"{short(value)} is not one of: {listed}{hint}")
    elif kind in ("pattern", "maxLength") and "errorMessage" in rule:
        report.error(path, f"{short(value)} {rule['errorMessage']}", key=as_key)
    else:
        report.error(path, error.message)
