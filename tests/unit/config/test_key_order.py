"""Key order: a warning wherever octoDNS's YamlProvider (enforce_order, its default) would refuse.

octoDNS wants the keys of every mapping in natural sort order; we load such files but warn, at the
line of each key that sorts before one written above it. The differential test has octoDNS itself
load generated files and checks that it refuses exactly the ones we warn about.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from natsort import natsort_keygen
from octodns.provider.yaml import YamlProvider
from octodns.zone import Zone as OctoZone

from anycastedge.config.key_order import natural_less
from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import build_zone, load_zones
from anycastedge.errors import Problem

REPO = Path(__file__).resolve().parents[3]
ORIGIN = "order.test."
ORDER = "keys out of order"


def order_warnings(path: Path) -> list[Problem]:
    """The key-order warnings of loading ``path`` (which must otherwise be valid)."""
    _zones, found = load_zones([path], SoaConfig())
    return [p for p in found if p.message.startswith(ORDER)]


def octodns_refuses(directory: Path) -> bool:
    """Whether octoDNS's YamlProvider, with its defaults, refuses order.test.yaml in directory."""
    provider = YamlProvider("order", str(directory), escaped_semicolons=False)
    assert provider.enforce_order  # the default this test is about
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            provider.populate(OctoZone(ORIGIN, []))
    except yaml.constructor.ConstructorError as exc:
        assert ORDER in str(exc)
        return True
    return False


def write(directory: Path, source: str) -> Path:
    """``source`` as the zone file order.test.yaml in ``directory``."""
    path = directory / f"{ORIGIN.rstrip('.')}.yaml"
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def test_keys_out_of_order_are_warned_about_at_their_lines(tmp_path: Path) -> None:
    """Top-level names and record keys alike; the warning names the key and what it sorts before."""
    path = write(
        tmp_path,
        """
        '':
          type: NS
          values: [ns1.order.test., ns2.order.test.]
        www:
          type: A
          value: 192.0.2.1
        api10:
          value: 192.0.2.3
          type: A
        api9:
          type: A
          value: 192.0.2.2
        """,
    )
    found = order_warnings(path)
    assert [(p.subject, p.location.line if p.location else 0) for p in found] == [
        ("api10", 9),  # `type` (line 9) sorts before `value` (line 8)
        ("api10", 7),  # api10 sorts before www
        ("api9", 10),  # api9 sorts before www too (natural order: api9 < api10 < www)
    ]
    assert found[0].message == (
        'keys out of order: "type" sorts before "value"; octoDNS would reject this file '
        "(its YamlProvider enforces key order by default)"
    )
    assert all(p.warning and p.location and p.location.file == str(path) for p in found)
    assert octodns_refuses(tmp_path)


def test_natural_order_is_not_warned_about(tmp_path: Path) -> None:
    """a2 before a10 is octoDNS's (natural) order: no warning, and octoDNS loads the file."""
    path = write(
        tmp_path,
        """
        '':
          type: NS
          values: [ns1.order.test., ns2.order.test.]
        a2:
          type: A
          value: 192.0.2.2
        a10:
          type: A
          value: 192.0.2.10
        """,
    )
    assert order_warnings(path) == []
    assert not octodns_refuses(tmp_path)


def test_octodns_own_test_zone_has_no_order_warning(octodns_unit_tests: Path) -> None:
    """octoDNS's unit.tests.yaml (which its YamlProvider loads with enforce_order) is in order."""
    _zone, found = build_zone(octodns_unit_tests, SoaConfig())
    assert [p for p in found if p.message.startswith(ORDER)] == []


@pytest.mark.parametrize("path", sorted((REPO / "zones").glob("*.yaml")), ids=lambda p: p.name)
def test_repo_zones_have_no_order_warning(path: Path) -> None:
    """The repo's zones are in octoDNS's order."""
    assert order_warnings(path) == []


def test_docs_example_zone_is_in_octodns_order(tmp_path: Path) -> None:
    """docs/zones.md's example zone: no order warning, and octoDNS's YamlProvider loads it."""
    text = (REPO / "docs" / "zones.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "order.test.yaml"
    path.write_text(block.replace("example.com.", ORIGIN))
    assert order_warnings(path) == []
    assert not octodns_refuses(tmp_path)


# Names chosen so that simple and natural sort disagree (a9 < a10 only naturally), with
# upper/lower case, underscores, a wildcard and the apex.
NAMES = ["", "*", "_a", "a", "a9", "a10", "a9b", "C", "b", "www", "x-1", "x-01", "x1"]
RECORD_KEYS = ["ttl", "type", "value"]


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True),
    shuffled=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_octodns_refuses_exactly_the_files_we_warn_about(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], shuffled: list[bool]
) -> None:
    """Random names in random order, some records with their own keys reversed: octoDNS's
    YamlProvider refuses the file if and only if we warn."""
    directory = tmp_path_factory.mktemp("order")
    lines = []
    for index, name in enumerate(names):
        keys = RECORD_KEYS[::-1] if shuffled[index] else RECORD_KEYS
        values = {"ttl": "60", "type": "TXT", "value": f"record {index}"}
        lines.append(f"'{name}':")
        lines.extend(f"  {key}: {values[key]}" for key in keys)
    path = write(directory, "\n".join(lines) + "\n")
    assert bool(order_warnings(path)) == octodns_refuses(directory)


KEY_TEXT = st.text(alphabet=st.sampled_from("ab_-.*0129Zé"), max_size=8)


@settings(max_examples=3000, deadline=None)
@given(a=KEY_TEXT, b=KEY_TEXT)
def test_natural_less_is_natsorts_order(a: str, b: str) -> None:
    """The shortcut compares keys exactly as natsort's own keys do (digit runs, leading zeros,
    prefixes, non-ASCII)."""
    natural = natsort_keygen()
    assert natural_less(a, b) == (natural(a) < natural(b))
