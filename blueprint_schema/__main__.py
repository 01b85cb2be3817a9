"""Command line: `python -m blueprint_schema check FILE [FILE ...]` validates without generating;
`python -m blueprint_schema schema` prints the complete blueprint JSON Schema (for editors)."""

from __future__ import annotations

import argparse
import json
import sys

from . import BlueprintError, load_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blueprint_schema")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate blueprint files without generating")
    check.add_argument("files", nargs="+", metavar="FILE")
    commands.add_parser(
        "schema", help="print blueprint.schema.json completed with the field types (for editors)"
    )
    arguments = parser.parse_args(argv)
    if arguments.command == "schema":
        from .schema_check import schema

        try:
            print(json.dumps(schema(), indent=2, ensure_ascii=False))
            sys.stdout.flush()
        except BrokenPipeError:  # `... schema | head`: the reader has what it wanted
            sys.stdout = None  # nothing left to flush at exit
        return 0

    failed = False
    for file in arguments.files:
        try:
            blueprint = load_file(file)
        except BlueprintError as error:
            failed = True
            for diagnostic in error.errors:
                print(f"{diagnostic}", file=sys.stderr)
            print(f"{file}: {len(error.errors)} error(s)", file=sys.stderr)
            continue
        for warning in blueprint.warnings:
            print(f"{warning} [warning]", file=sys.stderr)
        stores, endpoints = blueprint.model["stores"], blueprint.model["endpoints"]
        counts = f"{len(stores)} store(s), {len(endpoints)} endpoint(s)"
        print(f"{file}: ok: system {blueprint.name}, {counts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
