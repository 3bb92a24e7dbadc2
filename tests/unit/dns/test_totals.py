"""Counters of several DNS processes added up (dns: {workers: N})."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.totals import add_counters, queries, total

LABELS = st.sampled_from(["example.com", "example.net", "-", "A", "MX", "NOERROR", "udp", "tcp"])
KEYS = st.tuples(LABELS, LABELS, LABELS, LABELS)
COUNT = st.integers(min_value=0, max_value=2**40)


def _fill(out: Any, draw: Any) -> Any:
    """Every field of a counters dataclass filled by kind, groups (TcpCounts) within it too:
    a counter added there is covered."""
    for f in dataclasses.fields(out):
        value = getattr(out, f.name)
        if isinstance(value, dict):
            setattr(out, f.name, draw(st.dictionaries(KEYS, COUNT, max_size=6)))
        elif dataclasses.is_dataclass(value):
            _fill(value, draw)
        else:
            setattr(out, f.name, draw(COUNT))
    return out


def counters_of(draw: Any) -> DnsCounters:
    """A DnsCounters with every count drawn."""
    return _fill(DnsCounters(), draw)


def _assert_sum(summed: Any, parts: list[Any]) -> None:
    for f in dataclasses.fields(summed):
        mine = getattr(summed, f.name)
        values = [getattr(p, f.name) for p in parts]
        if isinstance(mine, dict):
            keys = {k for v in values for k in v}
            assert mine == {k: sum(v.get(k, 0) for v in values) for k in keys}
        elif dataclasses.is_dataclass(mine):
            _assert_sum(mine, values)
        else:
            assert mine == sum(values)


@given(st.data())
def test_the_total_is_the_sum_of_every_count(data: st.DataObject) -> None:
    parts = [counters_of(data.draw) for _ in range(data.draw(st.integers(0, 4)))]
    copies = [copy.deepcopy(p) for p in parts]
    summed = total(parts)
    assert parts == copies  # the parts are not changed
    _assert_sum(summed, parts)
    assert queries(summed) == sum(queries(p) for p in parts)


def test_a_field_that_cannot_be_added_is_refused() -> None:
    odd = DnsCounters()
    object.__setattr__(odd, "internal_errors", "many")
    with pytest.raises(TypeError, match="internal_errors"):
        add_counters(DnsCounters(), odd)
