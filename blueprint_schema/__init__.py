"""Load, check and normalise system blueprints, and write the files they determine.

load_file("shop.yaml") returns a Blueprint (its normalised .model and its .warnings) or
raises BlueprintError listing every error found, each as file:line:col: path: message.
"""

from .diagnostics import BlueprintError, Diagnostic
from .model import Blueprint, load_file, load_mapping

__all__ = ["Blueprint", "BlueprintError", "Diagnostic", "load_file", "load_mapping"]
