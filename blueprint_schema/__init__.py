"""Load, check and normalise system blueprints, and write the files they determine.

    from blueprint_schema import load_file, BlueprintError
    blueprint = load_file("shop.yaml")        # raises BlueprintError listing every error
    blueprint.model, blueprint.warnings
"""

from .diagnostics import BlueprintError, Diagnostic
from .model import Blueprint, load_file, load_mapping

__all__ = ["Blueprint", "BlueprintError", "Diagnostic", "load_file", "load_mapping"]
