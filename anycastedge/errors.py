"""The project's exception root and the config error that carries every reason with its place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a source file, 1-based like editors show it."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}, line {self.line}, column {self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason something is wrong (or, with ``warning``, suspicious), and where."""

    message: str
    location: Location | None = None
    subject: str = ""
    warning: bool = False

    def __str__(self) -> str:
        head = f'"{self.subject}": ' if self.subject else ""
        where = f" ({self.location})" if self.location else ""
        return f"{head}{self.message}{where}"


class AnycastEdgeError(Exception):
    """Something went wrong in anycastedge."""


class ConfigError(AnycastEdgeError):
    """The configuration or a zone file is invalid."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems) or "invalid configuration")
