"""The streaming YAML reader: what load_yaml reads, item by item, or a clear hand-over to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.config.source import MarkedDict, Unusual, load_yaml, top_level_items
from anycastedge.errors import ConfigError, Location

# Scalars whose YAML 1.1 reading is not a string, written plainly: the reader must type them
# exactly as PyYAML's resolver and constructors do.
TRICKY = ["yes", "No", "on", "~", "null", "", "1_000", "0o17", "017", "0x1F", "1e3", "1.5",
          ".inf", "-.NaN", "190:20:30", "+12", "-0", "0", "007", "1.2.3.4", "2001:db8::1",
          "=", "true", "FALSE"]  # fmt: skip
SCALAR = st.one_of(
    st.integers(-(10**12), 10**12),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(TRICKY),
)
KEY = st.one_of(st.text(max_size=10), st.sampled_from(TRICKY), st.integers(0, 99))
DATA = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEY, inner, max_size=4)),
    max_leaves=12,
)


def plain(value: Any) -> Any:
    """MarkedDicts as dicts, for comparing values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def marks(value: Any) -> list[tuple[Location, ...]]:
    """Every mapping's location and its keys' locations, in order."""
    out: list[tuple[Location, ...]] = []
    if isinstance(value, MarkedDict):
        out.append((value.location, *(value.where(k) for k in value)))
        for v in value.values():
            out += marks(v)
    elif isinstance(value, list):
        for v in value:
            out += marks(v)
    return out


def streamed(path: Path, text: str) -> list[tuple[Any, Any, Location]] | None:
    try:
        return list(top_level_items(path, text))
    except Unusual:
        return None


@settings(max_examples=300, deadline=None)
@given(
    data=st.dictionaries(KEY, DATA, min_size=1, max_size=6),
    flow=st.sampled_from([None, True, False]),
)
def test_stream_reads_what_load_yaml_reads(data: dict[Any, Any], flow: bool | None) -> None:
    """Values, types and every key's location are load_yaml's, for any document, block or flow."""
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False)
    path = Path("z.yaml")
    whole = load_yaml(path, text)
    items = streamed(path, text)
    assert items is not None
    assert [k for k, _, _ in items] == list(whole)
    assert [plain(v) for _, v, _ in items] == [plain(v) for v in whole.values()]
    assert [where for _, _, where in items] == [whole.where(k) for k in whole]
    assert [marks(v) for _, v, _ in items] == [marks(v) for v in whole.values()]


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {type: A, value: 192.0.2.1}\nb: *x\n",  # anchor and alias
        "base: &b {ttl: 60}\nwww: {<<: *b, type: A, value: 192.0.2.1}\n",  # merge key
        "a: !!str 12\n",  # explicit tag
        "a: 2001-12-14\n",  # a timestamp
        "a: 1\n---\nb: 2\n",  # two documents
        "a: 1\na: 2\n",  # duplicate key
        "- a\n- b\n",  # not a mapping
        "just text\n",
        "",
        "a: [1, 2\n",  # syntax error
        "? [a, b]\n: 1\n",  # a key that is a sequence
    ],
)
def test_unusual_documents_are_handed_to_load_yaml(text: str) -> None:
    """What the stream does not build itself it says so of (Unusual), before or after items."""
    path = Path("z.yaml")
    with pytest.raises(Unusual):
        list(top_level_items(path, text))


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("\x1f", 1, 1),
        ("www:\n  type: A\n  value: 192.0.2.1\x7f\n", 3, 19),
        ("a: " + "b" * 9000 + "\nc: d\x00\n", 2, 5),  # past PyYAML's first chunk
    ],
)
def test_a_control_character_is_a_problem_at_its_line(text: str, line: int, column: int) -> None:
    """Found by fuzzing (tests/fuzz): PyYAML's reader refused a control character with its own
    exception, outside ConfigError; it is a problem at the character's line and column."""
    with pytest.raises(ConfigError) as caught:
        load_yaml(Path("z.yaml"), text)
    [problem] = caught.value.problems
    assert problem.location == Location("z.yaml", line, column)
    assert problem.message.startswith("YAML: character #x")
