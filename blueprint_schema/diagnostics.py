"""Errors and warnings that say where (file:line:col and a path) and what."""

from __future__ import annotations

from dataclasses import dataclass, field


def format_path(path: tuple) -> str:
    """Render a path of keys and list indexes: components[2].config.store."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a blueprint."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class BlueprintError(Exception):
    """A blueprint that cannot be generated; carries every error found."""

    def __init__(self, errors: list[Diagnostic]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(error) for error in errors))


@dataclass
class Positions:
    """Where each value (and each mapping key) of a document stands in its file."""

    file: str
    values: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    keys: dict[tuple, tuple[int, int]] = field(default_factory=dict)

    def display(self, path: tuple) -> str:
        """The path as the author wrote it in the file."""
        return format_path(path)

    def locate(self, path: tuple, *, key: bool = False) -> tuple[int, int]:
        """Line and column of path, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        probe = tuple(path)
        if probe in table:
            return table[probe]
        while probe:
            probe = probe[:-1]
            if probe in self.values:
                return self.values[probe]
        return (1, 1)  # a problem of the whole document is reported at its start


@dataclass
class Report:
    """Collects diagnostics against one source file."""

    positions: Positions
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def _make(self, path: tuple, message: str, key: bool) -> Diagnostic:
        line, column = self.positions.locate(path, key=key)
        return Diagnostic(self.positions.file, line, column, self.positions.display(path), message)

    def error(self, path: tuple, message: str, *, key: bool = False) -> None:
        self.errors.append(self._make(path, message, key))

    def warn(self, path: tuple, message: str, *, key: bool = False) -> None:
        self.warnings.append(self._make(path, message, key))

    def raise_if_errors(self) -> None:
        if self.errors:
            ordered = sorted(set(self.errors), key=lambda d: (d.line, d.column, d.path, d.message))
            raise BlueprintError(ordered)
