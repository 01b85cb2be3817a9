"""Turn a blueprint of the earlier autocoder into the current format.

The earlier format nested `components` and `bindings` under `system`, named types `Store` and
`APIEndpoint`, called a component's settings `configuration` and carried keys that never did
anything here (`inputs`, `outputs`, `host`, `port`, ...). Each such key is named in a warning;
a credential is never carried over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .diagnostics import Positions, Report, format_path

LEGACY_TYPES = {"Store": "store", "APIEndpoint": "api_endpoint"}
CREDENTIAL_KEY = re.compile(r"password|passwd|secret|token|api_?keys?|connection_string|dsn|url$")

_NO_EFFECT_ENDPOINT = {
    "host": "the service binds from the BIND or PORT environment variable",
    "port": "the service binds from the BIND or PORT environment variable",
    "rate_limiting": "rate limiting belongs in the proxy in front of the service",
}
_NO_EFFECT_STORE = {
    "storage_type": "the database comes from DATABASE_URL at run time (SQLite when it is unset)",
    "testing_mode": "the generated tests pick their own database",
    "schema_validation": "requests are always validated against the store's fields",
}


@dataclass
class RemappedPositions(Positions):
    """Positions of the normalised document, looked up in the legacy file."""

    source: Positions | None = None
    mapping: dict | None = None

    def original(self, path: tuple) -> tuple:
        """The legacy path that a path of the normalised document came from."""
        assert self.mapping is not None
        for cut in range(len(path), -1, -1):
            prefix = tuple(path[:cut])
            if prefix in self.mapping:
                return self.mapping[prefix] + tuple(path[cut:])
        return tuple(path)

    def display(self, path: tuple) -> str:
        return format_path(self.original(path))

    def locate(self, path: tuple, *, key: bool = False) -> tuple[int, int]:
        assert self.source is not None
        return self.source.locate(self.original(path), key=key)


def is_legacy(document: object) -> bool:
    """The earlier format keeps components under `system`."""
    if not isinstance(document, dict):
        return False
    system = document.get("system")
    nested = isinstance(system, dict) and ("components" in system or "bindings" in system)
    return nested and "components" not in document


def normalise(document: dict, positions: Positions, report: Report) -> tuple[dict, Positions]:
    """Return the document in the current format and positions that point into the old file."""
    mapping: dict[tuple, tuple] = {}
    remapped = RemappedPositions(positions.file, source=positions, mapping=mapping)
    report.positions = remapped

    system = dict(document["system"])
    result: dict = {"schema_version": 1, "system": {}}
    for key, value in system.items():
        if key in ("name", "description", "version"):
            result["system"][key] = value
        elif key not in ("components", "bindings"):
            result["system"][key] = value  # the schema reports it as an unknown key
    mapping[("system",)] = ("system",)

    components = system.get("components")
    result["components"] = components
    mapping[("components",)] = ("system", "components")
    if isinstance(components, list):
        result["components"] = [
            _component(item, index, mapping, report) for index, item in enumerate(components)
        ]
    if "bindings" in system:
        mapping[("bindings",)] = ("system", "bindings")
        result["bindings"] = string_bindings(system["bindings"])

    for key, value in document.items():
        if key == "system":
            continue
        if key == "configuration" and isinstance(value, dict):
            for setting in value:
                report.warn(
                    ("configuration", setting),
                    "has no effect: run-time settings come from the environment "
                    "(see the generated README)",
                    key=True,
                )
        else:
            result[key] = value
            mapping[(key,)] = (key,)
    return result, remapped


def _component(item: object, index: int, mapping: dict, report: Report) -> object:
    old = ("system", "components", index)
    new = ("components", index)
    mapping[new] = old
    if not isinstance(item, dict):
        return item
    component: dict = {}
    for key, value in item.items():
        if key == "type" and value in LEGACY_TYPES:
            component["type"] = LEGACY_TYPES[value]
        elif key == "configuration":
            mapping[new + ("config",)] = old + ("configuration",)
            component["config"] = value
        elif key in ("inputs", "outputs"):
            report.warn(
                new + (key,),
                "has no effect: a store's fields define the data an endpoint accepts",
                key=True,
            )
        else:
            component[key] = value
    kind = component.get("type")
    if isinstance(kind, str) and kind not in ("store", "api_endpoint"):
        report.error(
            new + ("type",),
            f"component type {kind!r} is not supported; supported types: store, api_endpoint "
            "(legacy names Store, APIEndpoint)",
        )
        component["type"] = "store"  # keep checking the rest of the file
        component.pop("config", None)
    config = component.get("config")
    if isinstance(config, dict):
        if kind == "store":
            component["config"] = _store_config(config, new + ("config",), mapping, report)
        elif kind == "api_endpoint":
            component["config"] = _endpoint_config(config, new + ("config",), report)
    return component


def _drop_credential(path: tuple, key: str, report: Report) -> None:
    variable = "API_KEYS" if "key" in key else "DATABASE_URL"
    report.warn(
        path,
        f"holds a credential and is not copied into the generated service; "
        f"set the {variable} environment variable instead",
        key=True,
    )


def _store_config(config: dict, path: tuple, mapping: dict, report: Report) -> dict:
    result: dict = {}
    pool: dict = {}
    for key, value in config.items():
        if key in ("table", "fields", "pool"):
            result[key] = value
        elif key == "pool_size":
            pool["max_size"] = value
            mapping[path + ("pool", "max_size")] = mapping[path[:2]] + ("configuration", key)
        elif key == "database" and isinstance(value, dict):
            for inner, inner_value in value.items():
                where = path + (key, inner)
                if inner == "pool_size":
                    pool["max_size"] = inner_value
                    mapping[path + ("pool", "max_size")] = mapping[path[:2]] + (
                        "configuration",
                        key,
                        inner,
                    )
                elif CREDENTIAL_KEY.search(inner):
                    _drop_credential(where, inner, report)
                else:
                    report.warn(
                        where, f"has no effect: {_NO_EFFECT_STORE['storage_type']}", key=True
                    )
        elif CREDENTIAL_KEY.search(key):
            _drop_credential(path + (key,), key, report)
        else:
            reason = _NO_EFFECT_STORE.get(key, "the current format has no such store setting")
            report.warn(path + (key,), f"has no effect: {reason}", key=True)
    if pool:
        if isinstance(result.get("pool"), dict):
            pool = {**pool, **result["pool"]}
        result["pool"] = pool
    return result


def _endpoint_config(config: dict, path: tuple, report: Report) -> dict:
    result: dict = {}
    for key, value in config.items():
        if key in ("path", "store", "operations", "page_size", "max_page_size", "cors_origins"):
            result[key] = value
        elif key in ("auth_required", "auth"):
            result["auth"] = ("api_key" if value else "none") if isinstance(value, bool) else value
        elif CREDENTIAL_KEY.search(key):
            _drop_credential(path + (key,), key, report)
        else:
            reason = _NO_EFFECT_ENDPOINT.get(key, "the current format has no such endpoint setting")
            report.warn(path + (key,), f"has no effect: {reason}", key=True)
    return result


def string_bindings(bindings: object) -> object:
    """Accept `from`/`to` mappings and the string form `a.output -> b.input`."""
    if not isinstance(bindings, list):
        return bindings
    result = []
    for binding in bindings:
        if isinstance(binding, str) and "->" in binding:
            source, _, target = binding.partition("->")
            result.append({"from": source.strip(), "to": target.strip()})
        else:
            result.append(binding)
    return result
