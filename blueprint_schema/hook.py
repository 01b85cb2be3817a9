"""What cookiecutter's post-generation hook runs inside the freshly rendered project."""

from __future__ import annotations

import sys

from .diagnostics import BlueprintError
from .generate import write_project
from .model import load_file, load_mapping


def generate_into(project_dir: str, blueprint_file: str, inline: dict, system_name: str) -> int:
    """Write the blueprint's files into project_dir; a non-zero result stops cookiecutter.

    system_name is the answer cookiecutter collected (the blueprint's name unless the user
    typed another, already checked by the extension); it names the generated system.
    """
    try:
        blueprint = load_mapping(inline, "_blueprint") if inline else load_file(blueprint_file)
    except BlueprintError as error:  # the file changed after cookiecutter checked it
        print(f"error: {error}", file=sys.stderr)
        return 1
    blueprint.model["system"]["name"] = system_name
    write_project(blueprint, project_dir)
    return 0
