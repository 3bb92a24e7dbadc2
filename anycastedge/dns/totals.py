"""Counters of several DNS processes added up (pop.yaml ``dns: {workers: N}``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from anycastedge.dns.counters import DnsCounters


def add_counters(into: DnsCounters, more: DnsCounters) -> None:
    """Add every count of ``more`` to ``into``: numbers, and dicts of numbers key by key.

    Generic over DnsCounters' fields (and groups of counters within it), so that a counter added
    there is summed without a change here; a field of any other kind raises TypeError rather
    than being silently dropped."""
    _add(into, more, "DnsCounters")


def _add(into: Any, more: Any, name: str) -> None:
    for f in dataclasses.fields(into):
        mine, theirs = getattr(into, f.name), getattr(more, f.name)
        if isinstance(theirs, dict) and isinstance(mine, dict):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        elif isinstance(theirs, int | float) and isinstance(mine, int | float):
            setattr(into, f.name, mine + theirs)
        elif dataclasses.is_dataclass(mine) and type(mine) is type(theirs):
            _add(mine, theirs, f"{name}.{f.name}")  # a group of counters (TcpCounts)
        else:
            raise TypeError(f"{name}.{f.name}: cannot add {type(theirs).__name__}")


def total(parts: Iterable[DnsCounters]) -> DnsCounters:
    """A new DnsCounters holding the sum of ``parts`` (none of which is changed)."""
    out = DnsCounters()
    for part in parts:
        add_counters(out, part)
    return out


def queries(counters: DnsCounters) -> int:
    """Client queries answered (every transport, zone and response code)."""
    return sum(counters.responses.values())
