"""Load, check and normalise system blueprints, and write the files they determine.

load_file("shop.yaml") returns a CheckedBlueprint (its normalised .model and its .warnings) or
raises BlueprintError listing every error found, each as file:line:col: path: message.
"""

from .diagnostics import BlueprintError, Diagnostic
from .model import CheckedBlueprint, load_file, load_mapping

__all__ = ["CheckedBlueprint", "BlueprintError", "Diagnostic", "load_file", "load_mapping"]
