"""What cookiecutter's hooks run inside the project directory: before and after it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import migrations, regeneration
from .diagnostics import BlueprintError
from .generate import custom_files, owned_files, write_project
from .model import CheckedBlueprint, load_file
from .regeneration import BLUEPRINT_COPY
from .yaml_source import read_file


def check_before_writing(project_dir: str, context: dict, template_dir: str) -> int:
    """Pre-generation: print the plan of a regeneration; 1 (nothing written) when a file
    it would overwrite or delete was edited by hand or is not the generator's.

    context is cookiecutter's, rendered: the checked model is its __blueprint_model.
    """
    project = Path(project_dir).resolve()
    if (project.parent / regeneration.RECORD).is_file():
        print(
            f"error: {project.parent} is a generated project: run the command in the "
            "directory that holds it",
            file=sys.stderr,
        )
        return 1
    record = regeneration.Record.load(project)
    if record is None and not any(project.iterdir()):
        return 0  # a new project: nothing to compare
    model = json.loads(context["__blueprint_model"])
    try:
        revisions = _next_revisions(project, record, model)
    except migrations.UnsupportedChange as refusal:
        where = _location(context.get("__blueprint_file", ""), refusal.path)
        print(f"error: {where}: {refusal}", file=sys.stderr)
        print("error: regeneration stopped before writing anything", file=sys.stderr)
        return 1
    planned = {
        **regeneration.render_skeleton(Path(template_dir), context),
        **{path: text.encode() for path, text in owned_files(CheckedBlueprint(model)).items()},
    }
    if _describes(project / BLUEPRINT_COPY, model):
        planned[BLUEPRINT_COPY] = (project / BLUEPRINT_COPY).read_bytes()
    files = regeneration.file_plan(project, record, planned)
    changes = regeneration.blueprint_changes(record.model if record else {}, model)
    print(f"Regenerating {project.name}:")
    if record is None:
        print(f"  (no {regeneration.RECORD}: generated before the template kept a record)")
    changes += _custom_module_changes(project, record.model if record else {}, model)
    for change in changes + files.changes or ([] if files.conflicts else ["  nothing changes"]):
        print(change)
    for revision in revisions:
        for path in revision.files():
            print(regeneration.Change("add", f"file {path}"))
    for revision in revisions:
        print(f"  Migration {revision.number} (python -m app.migrate applies it):")
        for line in revision.summary():
            print(f"    {line}")
    if files.conflicts:
        for conflict in files.conflicts:
            print(f"error: {conflict}", file=sys.stderr)
        print(
            "error: regeneration stopped before writing anything: move your changes to "
            "app/custom/ (or undo them), then run it again",
            file=sys.stderr,
        )
        return 1
    return 0


def generate_into(project_dir: str, context: dict, template_dir: str) -> int:
    """Post-generation: write the files a checked model determines into project_dir, delete
    the generator's files the model no longer has, and record the generation; 0 when done.

    The model is what the cookiecutter extension checked and normalised before cookiecutter
    wrote anything (context["__blueprint_model"]), named with the system_name answer.
    """
    project = Path(project_dir).resolve()
    model = json.loads(context["__blueprint_model"])
    blueprint = CheckedBlueprint(model)
    template = Path(template_dir)
    record = regeneration.Record.load(project)
    owned = regeneration.skeleton_paths(template) | owned_files(blueprint).keys()
    # Checked unedited before anything was written (check_before_writing).
    stale = sorted((record.files.keys() if record else set()) - owned)
    keep = {BLUEPRINT_COPY} if _describes(project / BLUEPRINT_COPY, model) else set()
    revisions = _next_revisions(project, record, model)  # checked before anything was written
    for old, new in _carried(project, record.model if record else {}, model).items():
        (project / old).rename(project / new)
    write_project(blueprint, project, keep=keep)
    for revision in revisions:
        for relative, text in revision.files().items():
            regeneration.write_atomically(project / relative, text)
    regeneration.delete_files(project, stale)
    commit = regeneration.template_commit(template)
    cruft = regeneration.cruft_state(context, commit)
    if cruft is not None:
        regeneration.write_atomically(project / ".cruft.json", cruft)
    files = regeneration.hash_files(project, owned)
    record_text = regeneration.Record(model, commit, files).dumps()
    regeneration.write_atomically(project / regeneration.RECORD, record_text)
    return 0


def _carried(project: Path, old: dict, new: dict) -> dict[str, str]:
    """The custom modules of renamed stores that move with them: where the old one exists
    and the new one does not."""
    return {
        source: target
        for source, target in regeneration.carried_custom_modules(old, new).items()
        if (project / source).is_file() and not (project / target).exists()
    }


def _custom_module_changes(project: Path, old: dict, new: dict) -> list[regeneration.Change]:
    """The plan's lines for app/custom/: modules written for new components, and those of
    renamed stores, which move with them (or, when both exist, the old one left unused)."""
    carried = _carried(project, old, new)
    changes = [
        regeneration.Change("rename", f"file {source} -> {target}", "your code, with its store")
        for source, target in carried.items()
    ]
    for source, target in regeneration.carried_custom_modules(old, new).items():
        if source not in carried and (project / source).is_file():
            detail = f"no longer used: the renamed store uses {target}; move your code there"
            changes.append(regeneration.Change("keep", f"file {source}", detail, breaking=True))
    for path in sorted(custom_files(CheckedBlueprint(new)).keys() - set(carried.values())):
        if not (project / path).exists():
            changes.append(regeneration.Change("add", f"file {path}", "yours: written once"))
    return changes


def _next_revisions(
    project: Path, record: regeneration.Record | None, model: dict
) -> list[migrations.Revision]:
    """The migrations this generation writes, from the recorded model to the new one."""
    return migrations.next_revisions(
        record.model if record else None,
        model,
        migrations.latest_revision(project),
        migrations.column_history(project),
    )


def _describes(path: Path, model: dict) -> bool:
    """True when the project's blueprint.yaml, edited or not, is the blueprint being
    generated from (a user who edits it in place and regenerates from it): it is kept as it
    is, comments and all, rather than rewritten in normalised form."""
    if not path.is_file():
        return False
    try:
        return load_file(path).model == model
    except BlueprintError:
        return False


def _location(blueprint_file: str, path: tuple) -> str:
    """file:line:col of a model path (stores.<name>.fields...) in the blueprint file, when
    the file is in the current format; else the file alone."""
    if not blueprint_file:
        return "_blueprint"
    try:
        document, positions = read_file(blueprint_file)
    except (BlueprintError, OSError):
        return blueprint_file
    if path[0] != "stores":
        line, column = positions.locate(path)
        return f"{blueprint_file}:{line}:{column}"
    components = document.get("components") if isinstance(document, dict) else None
    store = path[1] if len(path) > 1 else None
    for index, component in enumerate(components if isinstance(components, list) else []):
        if isinstance(component, dict) and component.get("name") == store:
            line, column = positions.locate(("components", index, "config", *path[2:]))
            return f"{blueprint_file}:{line}:{column}"
    return blueprint_file
