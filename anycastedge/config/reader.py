"""Typed reads from a YAML mapping that collect every problem instead of stopping at the first."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from anycastedge.config.source import MarkedDict
from anycastedge.errors import Location, Problem

T = TypeVar("T")

_MISSING: Any = object()


def parse_hostport(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[V6]:PORT``; the host must be an IP address literal."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port {number} out of range")
    return host, number


class Reader:
    """Reads keys of one mapping, recording problems with the key's file:line."""

    def __init__(self, data: Any, path: str, problems: list[Problem], where: Location) -> None:
        self.path = path
        self.problems = problems
        self.where = where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problems.append(Problem(f"{path or 'file'} must be a mapping", where))
            data = {}
        self.data: dict[Any, Any] = data
        self.used: set[Any] = set()

    def _loc(self, key: str) -> Location:
        if isinstance(self.data, MarkedDict):
            return self.data.where(key)
        return self.where

    def location(self, key: str) -> Location:
        """Where ``key`` was written, else where this mapping was."""
        return self._loc(key)

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        """Record a problem for ``key``."""
        self.problems.append(Problem(f"{self._name(key)}: {message}", self._loc(key)))

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: T = _MISSING) -> T:
        """The value of ``key``, checked against ``kind``; ``default`` when absent."""
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                self.error(key, "is required")
                return None  # type: ignore[return-value]
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float):
            self.error(key, f"must be a number, not {value!r}")
            return default if default is not _MISSING else None  # type: ignore[return-value]
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.error(key, f"must be {names}, not {type(value).__name__} {value!r}")
            return default if default is not _MISSING else None  # type: ignore[return-value]
        return value  # type: ignore[return-value]

    def number(self, key: str, default: float, low: float, high: float) -> float:
        """A number within [low, high]."""
        value = self.get(key, float, float(default))
        if value is not None and not low <= value <= high:
            self.error(key, f"{value:g} is outside {low:g}..{high:g}")
            return default
        return default if value is None else value

    def converted(self, key: str, convert: Callable[[Any], T], default: T = _MISSING) -> T:
        """The value of ``key`` passed through ``convert``; its ValueError becomes a problem."""
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                self.error(key, "is required")
            return default if default is not _MISSING else None  # type: ignore[return-value]
        try:
            return convert(self.data[key])
        except (ValueError, TypeError) as exc:
            self.error(key, str(exc))
            return default if default is not _MISSING else None  # type: ignore[return-value]

    def child(self, key: str) -> Reader:
        """A Reader for the mapping under ``key`` (empty if absent)."""
        self.used.add(key)
        value = self.data.get(key)
        where = value.location if isinstance(value, MarkedDict) else self._loc(key)
        return Reader(value, self._name(key), self.problems, where)

    def finish(self) -> None:
        """Report keys nobody asked for: typos should not pass silently."""
        for key in self.data:
            if key not in self.used:
                self.error(str(key), "unknown key")
