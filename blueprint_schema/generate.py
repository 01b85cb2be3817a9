"""Write the blueprint-determined files of a generated service.

Cookiecutter renders the fixed part of the project; this module adds what depends on the
blueprint. Blueprint text only ever reaches generated files as data (YAML and JSON written by
their serialisers); the Python modules rendered here receive validated identifiers alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from importlib import resources
from pathlib import Path

import jinja2
import yaml

from . import schema_check
from .model import CheckedBlueprint
from .regeneration import BLUEPRINT_COPY
from .samples import store_samples
from .service_modules import defaults, field_types

GENERATED_NOTE = (
    "# Generated from blueprint.yaml by autocoder-template: regeneration rewrites this file.\n"
)


def _identifier(value: object) -> str:
    """Only checked names may be pasted into generated code."""
    if not isinstance(value, str) or not field_types.IDENTIFIER.fullmatch(value):
        raise ValueError(f"refusing to render {value!r} into generated code")
    return value


def import_order(name: str) -> list:
    """Natural order (store_2 before store_10), the order ruff's isort rule expects."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(resources.files(__package__).joinpath("templates")))
    environment = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["identifier"] = _identifier
    return environment


def to_blueprint(model: dict) -> dict:
    """The model written back as a current-format blueprint (legacy files come out migrated)."""
    components = []
    for name, store in model["stores"].items():
        config = {"table": store["table"], "pool": store["pool"]}
        if store["fields"] is not None:
            config["fields"] = store["fields"]
        components.append(_component(name, "store", store["description"], config))
    for name, endpoint in model["endpoints"].items():
        config = {key: value for key, value in endpoint.items() if key != "description"}
        components.append(_component(name, "api_endpoint", endpoint["description"], config))
    return {"schema_version": 1, "system": model["system"], "components": components}


def _component(name: str, kind: str, description: str, config: dict) -> dict:
    component = {"name": name, "type": kind}
    if description:
        component["description"] = description
    component["config"] = config
    return component


def system_config(model: dict) -> dict:
    """Run-time configuration: what the service reads at start-up (environment may override)."""
    pools = [store["pool"] for store in model["stores"].values()]
    return {
        "system": model["system"],
        "service": {
            "max_content_length": defaults.MAX_CONTENT_LENGTH,
            "proxy_count": 0,
            "log_level": "INFO",
        },
        "database": {
            "pool_min_size": max(
                (pool["min_size"] for pool in pools), default=defaults.POOL_MIN_SIZE
            ),
            "pool_max_size": max(
                (pool["max_size"] for pool in pools), default=defaults.POOL_MAX_SIZE
            ),
            "statement_timeout_ms": defaults.STATEMENT_TIMEOUT_MS,
        },
        "stores": {
            name: {"table": store["table"], "fields": store["fields"]}
            for name, store in model["stores"].items()
        },
        "endpoints": {
            name: {key: value for key, value in endpoint.items() if key != "description"}
            for name, endpoint in model["endpoints"].items()
        },
    }


# libyaml's emitter when PyYAML has it (its wheels do): about 3.5 times faster; the same data
# (only very long quoted strings may wrap at other places than in the pure-Python emitter).
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _PlainDumper(_SafeDumper):
    """Writes shared values (from YAML anchors in the blueprint) out in full, not as aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _dump_yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)


def _dump_json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _readme_data(model: dict) -> dict:
    """What the README shows: names, paths and settings, all checked identifiers or numbers."""
    config = system_config(model)
    return {
        "service": config["service"],
        "database": config["database"],
        "endpoints": sorted(config["endpoints"].items()),
        "stores": sorted(config["stores"].items()),
    }


def project_files(blueprint: CheckedBlueprint) -> dict[str, str]:
    """Every blueprint-determined file of the project, by its relative path."""
    model = blueprint.model
    environment = _environment()
    stores = sorted(model["stores"], key=import_order)
    endpoints = sorted(model["endpoints"], key=import_order)

    def render(template: str, **values: object) -> str:
        return environment.get_template(f"component/{template}").render(**values)

    files = {
        BLUEPRINT_COPY: "# yaml-language-server: $schema=blueprint.schema.json\n"
        + "# The blueprint this project was generated from. Edit it and regenerate from it\n"
        + "# (README.md, Layout and regeneration): it is then kept as you wrote it.\n"
        + _dump_yaml(to_blueprint(model)),
        "config/system_config.yaml": GENERATED_NOTE
        + "# Every value can be overridden from the environment: see README.md.\n"
        + _dump_yaml(system_config(model)),
        "tests/samples.json": _dump_json(
            {name: store_samples(store["fields"])[0] for name, store in model["stores"].items()}
        ),
        "README.md": environment.get_template("README.md.j2").render(
            system=model["system"], **_readme_data(model)
        ),
        "app/stores/__init__.py": render("stores_init.py.j2", stores=stores),
        "app/endpoints/__init__.py": render("endpoints_init.py.j2", endpoints=endpoints),
    }
    for name in stores:
        files[f"app/stores/{name}_sync.py"] = render("store_sync.py.j2", name=name)
        files[f"app/stores/{name}.py"] = render("store_async.py.j2", name=name)
    for name, endpoint in model["endpoints"].items():
        files[f"app/endpoints/{name}.py"] = render(
            "endpoint.py.j2", name=name, store=endpoint["store"]
        )
    return files


def custom_files(blueprint: CheckedBlueprint) -> dict[str, str]:
    """The per-component modules for custom logic: written once, never overwritten."""
    environment = _environment()
    files = {}
    for name in blueprint.model["stores"]:
        template = environment.get_template("component/custom_store.py.j2")
        files[f"app/custom/{name}.py"] = template.render(name=name)
    for name in blueprint.model["endpoints"]:
        template = environment.get_template("component/custom_endpoint.py.j2")
        files[f"app/custom/{name}.py"] = template.render(name=name)
    return files


def owned_files(blueprint: CheckedBlueprint) -> dict[str, str]:
    """The blueprint-determined files regeneration owns: rewritten each time, deleted when
    the blueprint no longer has them (the template's fixed files are owned too)."""
    return {**project_files(blueprint), "blueprint.schema.json": _dump_json(schema_check.schema())}


def write_project(
    blueprint: CheckedBlueprint, project_dir: str | Path, keep: Collection[str] = ()
) -> list[str]:
    """Write the blueprint-determined files into project_dir, except those to keep as they
    are; return the paths written."""
    root = Path(project_dir).resolve()
    written = []
    for relative, text in owned_files(blueprint).items():
        if relative in keep:
            continue
        _write(root, relative, text)
        written.append(relative)
    for relative, text in custom_files(blueprint).items():
        if not (root / relative).exists():
            _write(root, relative, text)
            written.append(relative)
    return written


def _write(root: Path, relative: str, text: str) -> None:
    target = (root / relative).resolve()
    if root not in target.parents:
        raise ValueError(f"refusing to write outside the project: {relative}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
