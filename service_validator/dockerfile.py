"""What the container runs, read from a project's Dockerfile, so that tests and benchmarks run
it directly where there is no Docker engine: the final stage's ENV, CMD, HEALTHCHECK and the
RUN steps that prepare the service's own files."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

IMAGE_VENV_BIN = "/opt/venv/bin"  # the image's virtualenv: this Python's, when run directly
BASE_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def final_stage(project: Path) -> list[str]:
    """The final build stage's instructions, one line each (continuations joined)."""
    text = (Path(project) / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    start = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[start:]


def exec_form(project: Path, instruction: str) -> list[str]:
    """The JSON-array command of CMD, or of HEALTHCHECK's CMD."""
    line = next(line for line in final_stage(project) if line.startswith(instruction + " "))
    return json.loads(line[line.index("[") :])


def environment(project: Path, home: Path) -> dict[str, str]:
    """The final stage's ENV as the container gets it, with the image's virtualenv standing
    for this Python's and HOME the service user's home (Docker sets it from the user)."""
    env = {"HOME": str(home), "PATH": BASE_IMAGE_PATH}
    for line in final_stage(project):
        if line.startswith("ENV "):
            for item in shlex.split(line[len("ENV ") :]):
                name, _, value = item.partition("=")
                env[name] = value.replace("$PATH", env["PATH"])
    env["PATH"] = env["PATH"].replace(IMAGE_VENV_BIN, str(Path(sys.executable).parent))
    return env


def python_run_steps(project: Path) -> list[list[str]]:
    """The final stage's `RUN python ...` steps, with this Python, to run in the project."""
    steps = []
    for line in final_stage(project):
        if line.startswith("RUN python "):
            steps.append([sys.executable, *shlex.split(line)[2:]])
    return steps
