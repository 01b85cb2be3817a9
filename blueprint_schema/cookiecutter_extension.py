"""Cookiecutter's way in: Jinja filters used by cookiecutter.json before anything is written.

The blueprint is checked here, while cookiecutter is still collecting its variables, so a bad
blueprint stops generation with its list of errors before any output directory exists.
"""

from __future__ import annotations

import json
import keyword
import logging
import os
import sys
from pathlib import Path

from jinja2.ext import Extension

from .diagnostics import BlueprintError
from .model import CheckedBlueprint, load_file, load_mapping
from .service_modules import field_types

TEMPLATE_DIR = Path(__file__).resolve().parent.parent


def resolve_blueprint_path(path: str) -> Path:
    """A path as the user gave it (relative to where cookiecutter runs), else the template's own
    copy (so the bundled example works from a gh: clone)."""
    given = Path(os.path.expanduser(path))
    if given.is_absolute() or given.exists():
        return given.resolve()
    bundled = TEMPLATE_DIR / given
    return bundled.resolve() if bundled.is_file() else given.resolve()


def load_blueprint(path: str, inline: object) -> CheckedBlueprint:
    """The blueprint from extra_context `_blueprint` when given, else from the file."""
    if isinstance(inline, dict) and inline:
        return load_mapping(inline, "_blueprint")
    return load_file(resolve_blueprint_path(path), display_name=path)


def _checked(path: str, inline: object) -> CheckedBlueprint:
    """The checked blueprint, or a clean exit listing its errors."""
    try:
        return load_blueprint(path, inline)
    except BlueprintError as error:
        for diagnostic in error.errors:
            print(f"error: {diagnostic}", file=sys.stderr)
        print(
            f"error: the blueprint has {len(error.errors)} error(s); nothing was generated",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


class _HookFailureWithoutTraceback(logging.Filter):
    """Our hooks print their own errors (file, reason, what to do) and exit 1; cookiecutter
    then logs its own traceback of that exit, which tells the user nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Stopping generation because"):
            record.exc_info = None
            record.exc_text = None
        return True


_HOOK_LOG_FILTER = _HookFailureWithoutTraceback()


class BlueprintExtension(Extension):
    """Registers the blueprint filters with cookiecutter's Jinja environment.

    cookiecutter renders all its variables with one environment per run, so the blueprint the
    filters share is read and checked once per run (and afresh in the next one).
    """

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self._checked: dict[tuple[str, str], CheckedBlueprint] = {}
        environment.filters["blueprint_system_name"] = self.system_name
        environment.filters["blueprint_model"] = self.model
        environment.filters["blueprint_file"] = self.blueprint_file
        environment.filters["blueprint_image_tag"] = self.image_tag
        environment.filters["kubernetes_name"] = kubernetes_name
        environment.globals["template_dir"] = str(TEMPLATE_DIR)
        hooks_log = logging.getLogger("cookiecutter.hooks")
        if _HOOK_LOG_FILTER not in hooks_log.filters:
            hooks_log.addFilter(_HOOK_LOG_FILTER)

    def blueprint(self, path: str, inline: object) -> CheckedBlueprint:
        key = (path, json.dumps(inline, sort_keys=True, default=str))
        if key not in self._checked:
            self._checked[key] = _checked(path, inline)
        return self._checked[key]

    def system_name(self, path: str, inline: object = None) -> str:
        """Check the blueprint (printing its warnings) and return its system name."""
        blueprint = self.blueprint(path, inline)
        for warning in blueprint.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return blueprint.name

    def blueprint_file(self, path: str, inline: object = None) -> str:
        """The blueprint file's absolute path (for messages that point into it), or ""
        when the blueprint came as a mapping."""
        if isinstance(inline, dict) and inline:
            return ""
        return str(resolve_blueprint_path(path))

    def image_tag(self, path: str, inline: object = None) -> str:
        """The blueprint's system.version as a container image tag (which allows no "+")."""
        return self.blueprint(path, inline).model["system"]["version"].replace("+", "_")

    def model(self, path: str, inline: object, system_name: str) -> str:
        """The checked, normalised model as JSON, named system_name, for the hook.

        Rendered after the system_name answer, so a name the user typed is checked here too,
        before cookiecutter makes a directory of it.
        """
        valid = isinstance(system_name, str) and field_types.IDENTIFIER.fullmatch(system_name)
        if not valid or keyword.iskeyword(system_name):
            print(
                f"error: system_name {system_name!r} must be {field_types.IDENTIFIER_RULE}; "
                "nothing was generated",
                file=sys.stderr,
            )
            raise SystemExit(1)
        model = self.blueprint(path, inline).model
        return json.dumps({**model, "system": {**model["system"], "name": system_name}})


def kubernetes_name(system_name: str) -> str:
    """A system name as Kubernetes names its objects (DNS-1123: no "_"), short enough for the
    suffixes the manifests add (-migrate, -dev, a ConfigMap's hash)."""
    return system_name.replace("_", "-")[:55].rstrip("-")
