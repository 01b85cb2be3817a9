"""Load a blueprint, check what the schema cannot, and build the normalised system model.

The model is plain data (it is written to the generated service's config/system_config.yaml):

    system:    {name, description, version}
    stores:    {name: {description, table, fields | None, pool: {min_size, max_size}},
                       and when the blueprint says so: renamed_from, renamed_fields
                       {field: earlier name}, drop_columns}
    endpoints: {name: {description, path, store, operations, page_size, max_page_size,
                       auth, cors_origins}}
    drop_tables (when the blueprint names any)
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import legacy, schema_check
from .diagnostics import Diagnostic, Positions, Report
from .samples import field_samples
from .service_modules import defaults, field_types
from .yaml_source import read_file

RESERVED_PATHS = ("/health", "/ready", "/metrics", "/openapi.json")
ALL_OPERATIONS = ["list", "get", "create", "update", "delete"]
# user:password@ in a URL. The validator and the template tests look for it in generated files.
CREDENTIAL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@'\"]*:[^\s/@'\"$]+@", re.IGNORECASE)


@dataclass
class CheckedBlueprint:
    """A checked blueprint: the model to generate from and the warnings to show."""

    model: dict
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.model["system"]["name"]


def load_file(path: str | Path, display_name: str | None = None) -> CheckedBlueprint:
    """Read, check and normalise a blueprint file; raise BlueprintError listing every error."""
    document, positions = read_file(path, display_name)
    return load_document(document, positions)


def load_mapping(document: object, source: str = "<blueprint mapping>") -> CheckedBlueprint:
    """Check and normalise a blueprint given as data (e.g. cookiecutter extra_context)."""
    return load_document(document, Positions(source))


def load_document(document: object, positions: Positions) -> CheckedBlueprint:
    report = Report(positions)
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        report.error((), f"a blueprint is a mapping with system and components; this one is {kind}")
        report.raise_if_errors()
    if legacy.is_legacy(document):
        document, _ = legacy.normalise(document, positions, report)
    elif isinstance(document.get("bindings"), list):
        document = {**document, "bindings": legacy.string_bindings(document["bindings"])}
    schema_check.check(document, report)
    report.raise_if_errors()
    model = _build(document, report)
    report.raise_if_errors()
    warnings = sorted(report.warnings, key=lambda d: (d.line, d.column, d.path))
    return CheckedBlueprint(model, warnings)


def _build(document: dict, report: Report) -> dict:
    system = document["system"]
    _check_name(system["name"], ("system", "name"), report)
    model = {
        "system": {
            "name": system["name"],
            "description": system.get("description", ""),
            "version": system.get("version", defaults.VERSION),
        },
        "stores": {},
        "endpoints": {},
    }
    _check_free_text(document, (), report)
    components = document["components"]
    kinds: dict[str, str] = {}
    for index, component in enumerate(components):
        name = component["name"]
        where = ("components", index)
        if name in kinds:
            report.error(where + ("name",), f"duplicate component name {name!r}")
            continue
        _check_name(name, where + ("name",), report)
        kinds[name] = component["type"]
        config = component.get("config", {})
        if component["type"] == "store":
            model["stores"][name] = _store(name, component, config, where, report)
        else:
            model["endpoints"][name] = _endpoint(name, component, config)

    bound, broken = _bindings(document.get("bindings", []), kinds, report)
    stores = sorted(model["stores"])
    paths: dict[str, str] = {}
    for index, component in enumerate(components):
        name = component["name"]
        endpoint = model["endpoints"].get(name)
        if endpoint is None or kinds.get(name) != "api_endpoint":
            continue
        where = ("components", index, "config")
        if name not in broken:
            _resolve_store(name, endpoint, bound.get(name), stores, kinds, where, report)
        _check_path(name, endpoint, paths, where, report)
        if endpoint["page_size"] > endpoint["max_page_size"]:
            report.error(
                where + ("page_size",),
                f"page_size {endpoint['page_size']} is above max_page_size "
                f"{endpoint['max_page_size']}",
            )
    if document.get("drop_tables"):
        model["drop_tables"] = document["drop_tables"]
    _check_collisions(model, components, report)
    return model


def _check_name(name: str, path: tuple, report: Report) -> None:
    if keyword.iskeyword(name):
        report.error(path, f"{name!r} is a Python keyword; choose another name")


def _check_free_text(value: object, path: tuple, report: Report) -> None:
    """Credentials never belong in a blueprint: they would be copied into generated files."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_free_text(item, path + (key,), report)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_free_text(item, path + (index,), report)
    elif isinstance(value, str) and CREDENTIAL_IN_TEXT.search(value):
        report.error(
            path,
            "holds a credential (user:password@ in a URL); credentials are never copied into "
            "generated files: remove it and set DATABASE_URL or API_KEYS at run time",
        )


def _store(name: str, component: dict, config: dict, where: tuple, report: Report) -> dict:
    fields = config.get("fields")
    pool = {
        "min_size": defaults.POOL_MIN_SIZE,
        "max_size": defaults.POOL_MAX_SIZE,
        **config.get("pool", {}),
    }
    if pool["min_size"] > pool["max_size"]:
        report.error(
            where + ("config", "pool", "min_size"),
            f"min_size {pool['min_size']} is above max_size {pool['max_size']}",
        )
    store = {"description": component.get("description", ""), "table": config.get("table", name)}
    if fields is not None:
        for field_name, spec in fields.items():
            _check_field(field_name, spec, where + ("config", "fields", field_name), report)
        renamed = _field_renames(fields, where + ("config", "fields"), report)
        fields = {
            field_name: {key: value for key, value in spec.items() if key != "renamed_from"}
            for field_name, spec in fields.items()
        }
        if renamed:
            store["renamed_fields"] = renamed
    store.update(fields=fields, pool=pool)
    if "renamed_from" in config:
        store["renamed_from"] = config["renamed_from"]
    for index, column in enumerate(config.get("drop_columns", [])):
        if column in (fields or {}):
            report.error(
                where + ("config", "drop_columns", index),
                f"{column} is a field of {name}: remove the field to drop its column",
            )
    if config.get("drop_columns"):
        store["drop_columns"] = config["drop_columns"]
    return store


def _field_renames(fields: dict, path: tuple, report: Report) -> dict[str, str]:
    """{field: its earlier name} from the fields' renamed_from."""
    renamed: dict[str, str] = {}
    for field_name, spec in fields.items():
        old = spec.get("renamed_from")
        if old is None:
            continue
        where = path + (field_name, "renamed_from")
        if old in fields:
            report.error(where, f"renamed_from {old}: the store still has a field {old}")
        elif old in renamed.values():
            report.error(where, f"renamed_from {old}: another field is renamed from it too")
        else:
            renamed[field_name] = old
    return renamed


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _check_field(name: str, spec: dict, path: tuple, report: Report) -> None:
    errors_before = len(report.errors)
    kind = field_types.TYPES[spec["type"]]
    if name in field_types.SYSTEM_COLUMNS:
        report.error(
            path, f"field name {name!r} is reserved: every record has id, created_at, updated_at"
        )
    elif name in field_types.INTERNAL_COLUMNS:
        report.error(
            path, f"field name {name!r} is reserved: the table keeps each POST's Idempotency-Key"
        )
    for option in spec:
        if option not in kind.options:
            report.error(
                path + (option,),
                f"option {option!r} does not apply to {_article(kind.name)} {kind.name} field; "
                f"it takes: {', '.join(sorted(kind.options))}",
                key=True,
            )
    for low, high in (("min_length", "max_length"), ("minimum", "maximum"), ("scale", "precision")):
        if low in spec and high in spec and spec[low] > spec[high]:
            report.error(path + (low,), f"{low} {spec[low]} is above {high} {spec[high]}")
    longest = kind.schema({}).get("maxLength")  # the type's own limit (email: 254)
    if longest is not None and spec.get("max_length", 0) > longest:
        report.error(
            path + ("max_length",),
            f"max_length {spec['max_length']} is above {longest}: no {kind.name} value is longer",
        )
    if "pattern" in spec:
        problem = pattern_error(spec["pattern"])
        if problem:
            report.error(path + ("pattern",), problem)
            return
    problems_of = field_types.value_problems(spec)
    for option in ("default", "example"):
        if option in spec:
            problems = problems_of(spec[option])
            if problems:
                report.error(
                    path + (option,), f"{schema_check.short(spec[option])} fails: {problems[0]}"
                )
    without_enum = field_types.value_problems({k: v for k, v in spec.items() if k != "enum"})
    for index, value in enumerate(spec.get("enum", [])):
        problems = without_enum(value)
        if problems:
            report.error(
                path + ("enum", index), f"{schema_check.short(value)} fails: {problems[0]}"
            )
    consistent = len(report.errors) == errors_before
    if consistent and "example" not in spec and not field_samples(name, spec):
        report.error(
            path,
            "no value satisfying this field's constraints could be derived for the generated "
            "tests; add `example:` with a valid value",
        )


def pattern_error(pattern: str) -> str | None:
    """Why a field's pattern cannot be used, or None. Patterns are ECMA-262 regular
    expressions (JSON Schema's dialect), which the service's validator runs."""
    import jsonschema_rs

    try:
        field_types.value_validator({"pattern": pattern})
    except jsonschema_rs.ValidationError:
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"not a valid regular expression: {exc}"
        return "not a valid regular expression in JSON Schema's dialect (ECMA-262)"
    return None


def _endpoint(name: str, component: dict, config: dict) -> dict:
    return {
        "description": component.get("description", ""),
        "path": config.get("path", f"/{name}"),
        "store": config.get("store"),
        "operations": [
            op for op in ALL_OPERATIONS if op in config.get("operations", ALL_OPERATIONS)
        ],
        "page_size": config.get("page_size", defaults.PAGE_SIZE),
        "max_page_size": config.get(
            "max_page_size", max(defaults.MAX_PAGE_SIZE, config.get("page_size", 0))
        ),
        "auth": config.get("auth", "none"),
        "cors_origins": config.get("cors_origins", []),
    }


def _bindings(
    bindings: list, kinds: dict[str, str], report: Report
) -> tuple[dict[str, tuple[str, tuple]], set[str]]:
    """Map each endpoint to the store a binding connects it to; also return the components
    named by a faulty binding (already reported, so not reported again as unbound)."""
    bound: dict[str, tuple[str, tuple]] = {}
    broken: set[str] = set()
    names = sorted(kinds)
    for index, binding in enumerate(bindings):
        ends = {}
        for side in ("from", "to"):
            target = binding[side].split(".")[0]
            ends[side] = target
            if target not in kinds:
                report.error(
                    ("bindings", index, side),
                    f"no component named {target!r}{schema_check.suggestion(target, names)}",
                )
        if any(target not in kinds for target in ends.values()):
            broken.update(ends.values())
            continue
        pair = {kinds[ends["from"]]: ends["from"], kinds[ends["to"]]: ends["to"]}
        if set(pair) != {"store", "api_endpoint"}:
            report.error(
                ("bindings", index),
                f"binds {ends['from']!r} ({kinds[ends['from']]}) to {ends['to']!r} "
                f"({kinds[ends['to']]}); a binding connects an api_endpoint to a store",
            )
            broken.update(ends.values())
            continue
        endpoint, store = pair["api_endpoint"], pair["store"]
        if endpoint in bound and bound[endpoint][0] != store:
            report.error(
                ("bindings", index),
                f"{endpoint!r} is already bound to {bound[endpoint][0]!r}; "
                "an endpoint serves one store",
            )
            continue
        bound[endpoint] = (store, ("bindings", index))
    return bound, broken


def _resolve_store(
    name: str,
    endpoint: dict,
    binding: tuple[str, tuple] | None,
    stores: list[str],
    kinds: dict[str, str],
    where: tuple,
    report: Report,
) -> None:
    named = endpoint["store"]
    if named is not None:
        if kinds.get(named) != "store":
            what = "is an api_endpoint, not a store" if named in kinds else "is not a store"
            hint = schema_check.suggestion(named, stores)
            report.error(where + ("store",), f"{named!r} {what}{hint}")
        elif binding is not None and binding[0] != named:
            report.error(
                binding[1],
                f"binds {name!r} to {binding[0]!r} but its config names store {named!r}",
            )
        return
    if binding is not None:
        endpoint["store"] = binding[0]
        return
    report.error(
        where[:2] + ("name",),
        f"api_endpoint {name!r} serves no store: give config.store or a binding "
        f"(stores: {', '.join(stores) or 'none'})",
    )


def _check_path(
    name: str, endpoint: dict, paths: dict[str, str], where: tuple, report: Report
) -> None:
    path = endpoint["path"]
    if path in RESERVED_PATHS or any(
        path.startswith(reserved + "/") for reserved in RESERVED_PATHS
    ):
        report.error(where + ("path",), f"path {path} is served by the service itself")
    elif path in paths:
        report.error(
            where + ("path",), f"path {path} is already served by endpoint {paths[path]!r}"
        )
    elif any(segment.isdigit() for segment in path.split("/")):
        report.error(
            where + ("path",),
            f"path {path} has an all-digit segment, which would be taken for a record id",
        )
    else:
        paths[path] = name


def _check_collisions(model: dict, components: list, report: Report) -> None:
    """Names whose generated modules or tables would clash."""
    tables: dict[str, str] = {}
    index_of = {component["name"]: index for index, component in enumerate(components)}
    for name, store in model["stores"].items():
        table = store["table"]
        if table in tables:
            report.error(
                ("components", index_of[name], "config", "table"),
                f"table {table!r} is already used by store {tables[table]!r}",
            )
        tables[table] = name
    for name, store in model["stores"].items():
        if store.get("renamed_from") in model["stores"]:
            report.error(
                ("components", index_of[name], "config", "renamed_from"),
                f"renamed_from {store['renamed_from']}: the blueprint still has a store of "
                "that name",
            )
    for index, table in enumerate(model.get("drop_tables", [])):
        if table in tables:
            report.error(
                ("drop_tables", index), f"table {table} holds store {tables[table]}'s rows"
            )
    for name in list(model["stores"]) + list(model["endpoints"]):
        if name.endswith("_sync") and name[: -len("_sync")] in model["stores"]:
            report.error(
                ("components", index_of[name], "name"),
                f"{name!r} would collide with the generated module {name}.py "
                f"(the sync wrapper of store {name[: -len('_sync')]!r}); choose another name",
            )
