"""What cookiecutter's post-generation hook runs inside the freshly rendered project."""

from __future__ import annotations

from .generate import write_project
from .model import CheckedBlueprint


def generate_into(project_dir: str, model: dict) -> int:
    """Write the files a checked model determines into project_dir; 0 when done.

    model is what the cookiecutter extension checked and normalised before cookiecutter wrote
    anything (blueprint_model), named with the system_name answer.
    """
    write_project(CheckedBlueprint(model), project_dir)
    return 0
