"""Modules of the generated service that the generator shares: loaded from the project template.

A field type, a default or a naming rule is defined once, in the service's own source
(`{{cookiecutter.system_name}}/app/`); the generator checks blueprints and writes files with
that same code rather than a copy of it. The modules are loaded by path, on their own: they
import nothing else of the service.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SERVICE_APP_DIR = Path(__file__).resolve().parent.parent / "{{cookiecutter.system_name}}" / "app"


def _load(name: str) -> ModuleType:
    qualified = f"{__package__}.service_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, SERVICE_APP_DIR / f"{name}.py")
    if spec is None or spec.loader is None:  # pragma: no cover - a broken checkout
        raise ImportError(f"cannot load {SERVICE_APP_DIR / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


field_types = _load("field_types")
defaults = _load("defaults")
migrate = _load("migrate")  # the revision files' names
