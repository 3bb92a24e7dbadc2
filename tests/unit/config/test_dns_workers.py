"""pop.yaml ``dns.workers``: how many processes answer DNS; every bad value named with file:line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anycastedge.config.pop import DnsConfig, load_pop
from anycastedge.errors import ConfigError


def load(tmp_path: Path, workers: str | None) -> Path:
    path = tmp_path / "pop.yaml"
    line = "" if workers is None else f"  workers: {workers}\n"
    path.write_text(f"pop: t1\ndns:\n  listen: ['127.0.0.1:5300']\n{line}  nsid: true\n")
    return path


def test_default_number_and_auto(tmp_path: Path) -> None:
    assert DnsConfig().workers == 1
    assert load_pop(load(tmp_path, None)).dns.workers == 1
    assert load_pop(load(tmp_path, "1")).dns.workers == 1
    assert load_pop(load(tmp_path, "64")).dns.workers == 64
    assert load_pop(load(tmp_path, "auto")).dns.workers == min(os.cpu_count() or 1, 64)


@pytest.mark.parametrize("value", ["0", "65", "-1", "many", "true", "2.5", "'2'", "[2]", "null"])
def test_bad_values_are_named_with_their_line(tmp_path: Path, value: str) -> None:
    path = load(tmp_path, value)
    with pytest.raises(ConfigError) as caught:
        load_pop(path)
    (problem,) = caught.value.problems
    assert problem.message.startswith("dns.workers: must be"), problem.message
    assert problem.location is not None and problem.location.file == str(path)
    assert problem.location.line == 4
