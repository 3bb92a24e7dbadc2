"""Counters of several DNS processes added up (pop.yaml ``dns: {workers: N}``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from anycastedge.dns.counters import DnsCounters


def add_counters(into: DnsCounters, more: DnsCounters) -> None:
    """Add every count of ``more`` to ``into``: numbers, and dicts of numbers key by key.

    Generic over DnsCounters' fields, so that a counter added there is summed without a change
    here; a field of any other kind raises TypeError rather than being silently dropped."""
    for f in dataclasses.fields(DnsCounters):
        mine, theirs = getattr(into, f.name), getattr(more, f.name)
        if isinstance(theirs, dict) and isinstance(mine, dict):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        elif isinstance(theirs, int | float) and isinstance(mine, int | float):
            setattr(into, f.name, mine + theirs)
        else:
            raise TypeError(f"DnsCounters.{f.name}: cannot add {type(theirs).__name__}")


def total(parts: Iterable[DnsCounters]) -> DnsCounters:
    """A new DnsCounters holding the sum of ``parts`` (none of which is changed)."""
    out = DnsCounters()
    for part in parts:
        add_counters(out, part)
    return out


def queries(counters: DnsCounters) -> int:
    """Client queries answered (every transport, zone and response code)."""
    return sum(counters.responses.values())
