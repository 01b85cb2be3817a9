"""Read a blueprint file into plain data, remembering where every value stands.

The loader is built on PyYAML's event stream rather than its recursive composer so that a
hostile file (alias bomb, deep nesting, duplicate keys, huge size, wrong encoding) is refused
with a located message instead of exhausting memory, recursion or patience.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .diagnostics import BlueprintError, Diagnostic, Positions, format_path

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000  # after alias expansion
# libyaml's parser when PyYAML was built with it (much faster on large input), else PyYAML's.
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Failure(Exception):
    def __init__(self, mark: yaml.Mark | None, path: tuple, message: str) -> None:
        self.mark = mark
        self.path = path
        self.message = message


def _position(mark: yaml.Mark | None) -> tuple[int, int]:
    # No mark: a problem of the whole file (empty, too large), reported at its start.
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


@dataclass
class _Open:
    """A mapping or sequence whose end event has not come yet."""

    value: dict | list
    path: tuple
    mark: yaml.Mark
    anchor: str | None
    size: int = 1
    key: object = None
    key_mark: yaml.Mark | None = None
    has_key: bool = False
    merged: set = field(default_factory=set)

    def child_path(self) -> tuple:
        if isinstance(self.value, list):
            return self.path + (len(self.value),)
        return self.path + (self.key,) if self.has_key else self.path


class _Builder:
    """Turns YAML events into Python values with a bounded, non-recursive walk."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.loader = yaml.SafeLoader("")
        self.anchors: dict[str, tuple[object, int]] = {}
        self.nodes = 0
        self.stack: list[_Open] = []
        self.root: list = []

    def scalar(self, event: yaml.ScalarEvent, path: tuple, *, is_key: bool) -> object:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == "tag:yaml.org,2002:merge":
            if is_key:
                return _MERGE
            tag = "tag:yaml.org,2002:str"
        if tag == "tag:yaml.org,2002:timestamp":
            tag = "tag:yaml.org,2002:str"  # a blueprint is JSON-like: dates stay ISO text
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise _Failure(event.start_mark, path, f"cannot read value: {exc.problem}") from None

    def count(self, mark: yaml.Mark, path: tuple, amount: int) -> None:
        self.nodes += amount
        if self.nodes > MAX_NODES:
            raise _Failure(
                mark,
                path,
                f"the document expands to more than {MAX_NODES} values "
                "(a YAML alias bomb?); blueprints are far smaller",
            )

    def place(self, value: object, size: int, mark: yaml.Mark, anchor: str | None) -> None:
        """Put a finished value into the open container (or make it the document)."""
        if anchor:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root.append(value)
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, list):
            self.positions.values[top.path + (len(top.value),)] = _position(mark)
            top.value.append(value)
        elif not top.has_key:
            if isinstance(value, (dict, list)):
                raise _Failure(mark, top.path, "a mapping key must be a plain value")

            top.key, top.key_mark, top.has_key = value, mark, True
        else:
            self.put_entry(top, value, mark)

    def put_entry(self, top: _Open, value: object, mark: yaml.Mark) -> None:
        key, key_mark = top.key, top.key_mark
        top.key, top.key_mark, top.has_key = None, None, False
        mapping = top.value
        if key is _MERGE:
            for source in value if isinstance(value, list) else [value]:
                if not isinstance(source, dict):
                    raise _Failure(mark, top.path, "a merge key (<<) takes a mapping")
                for merged_key, merged_value in source.items():
                    if merged_key not in mapping:
                        mapping[merged_key] = merged_value
                        top.merged.add(merged_key)
            return
        if key in mapping and key not in top.merged:
            raise _Failure(key_mark, top.path + (key,), f"duplicate key {key!r}")
        top.merged.discard(key)
        self.positions.keys[top.path + (key,)] = _position(key_mark)
        self.positions.values[top.path + (key,)] = _position(mark)
        mapping[key] = value

    def build(self, events) -> object:
        """Consume events as the parser makes them, so limits stop a hostile file early."""
        documents = 0
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Failure(event.start_mark, (), "a blueprint file holds one YAML document")
                continue
            path = self.stack[-1].child_path() if self.stack else ()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(self.stack) >= MAX_DEPTH:
                    message = f"nesting deeper than {MAX_DEPTH} levels; blueprints are far flatter"
                    raise _Failure(event.start_mark, path, message)
                self.count(event.start_mark, path, 1)
                value = {} if isinstance(event, yaml.MappingStartEvent) else []
                if not self.stack:
                    self.positions.values[()] = _position(event.start_mark)
                self.stack.append(_Open(value, path, event.start_mark, event.anchor))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = self.stack.pop()
                self.place(done.value, done.size, done.mark, done.anchor)
            elif isinstance(event, yaml.ScalarEvent):
                self.count(event.start_mark, path, 1)
                top = self.stack[-1] if self.stack else None
                is_key = top is not None and isinstance(top.value, dict) and not top.has_key
                value = self.scalar(event, path, is_key=is_key)
                self.place(value, 1, event.start_mark, event.anchor)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in self.anchors:
                    raise _Failure(event.start_mark, path, f"unknown alias *{event.anchor}")
                value, size = self.anchors[event.anchor]
                self.count(event.start_mark, path, size)
                self.place(value, size, event.start_mark, None)
        return self.root[0] if self.root else None


class _MergeKey:
    def __repr__(self) -> str:
        return "<<"


_MERGE = _MergeKey()
_NO_KEY = object()


def _located(file: str, mark: yaml.Mark | None, path: tuple, message: str) -> BlueprintError:
    line, column = _position(mark)
    return BlueprintError([Diagnostic(file, line, column, format_path(path), message)])


def parse_text(text: str, file: str) -> tuple[object, Positions]:
    """Parse YAML text into plain data and the positions of its values."""
    positions = Positions(file)
    builder = _Builder(positions)
    try:
        data = builder.build(yaml.parse(text, Loader=_PARSER))
    except _Failure as failure:
        raise _located(file, failure.mark, failure.path, failure.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.problem:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise _located(file, mark, (), f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise _located(file, None, (), f"invalid YAML: {exc}") from None
    return data, positions


def read_file(path: str | Path, display_name: str | None = None) -> tuple[object, Positions]:
    """Read and parse a blueprint file, refusing oversized or non-UTF-8 input."""
    name = display_name or str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _located(name, None, (), "no such blueprint file") from None
    except IsADirectoryError:
        raise _located(name, None, (), "is a directory, not a blueprint file") from None
    except OSError as exc:
        raise _located(name, None, (), f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES} bytes; blueprints are far smaller"
        raise _located(name, None, (), message)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded"
        raise BlueprintError([Diagnostic(name, line, column, "(document)", message)]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse_text(text, name)
