"""Render the reliability tests' measurements (JSON lines) as the README's reliability table."""

from __future__ import annotations

import json
import platform
import sys
from datetime import date
from pathlib import Path

START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
COLUMNS = ("test", "load", "fault", "result", "sent", "errors", "acknowledged", "found")


def table(records: list[dict]) -> str:
    lines = [
        f"Measured {date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({platform.machine()}, Python {platform.python_version()}) by `scripts/reliability`.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for record in records:
        cells = [str(record.get(column, "")).replace("|", "\\|") for column in COLUMNS]
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(results: Path, readme: Path) -> int:
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"error: {readme} lacks the {START} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table(records)}\n{END}{tail}", encoding="utf-8")
    print(f"{len(records)} rows written to {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
