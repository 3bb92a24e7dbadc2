"""The examples in the operator docs are real: they load as written."""

from __future__ import annotations

from pathlib import Path

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_gslb_guide_example_zone_loads(tmp_path: Path) -> None:
    """docs/gslb.md's complete example zone loads without errors or warnings."""
    text = (DOCS / "gslb.md").read_text()
    block = text.split("`zones/example.net.yaml`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.net.yaml").write_text(block)
    zones, warnings = load_zones([tmp_path], SoaConfig())
    assert warnings == []
    (zone,) = zones
    (record,) = zone.dynamic.values()
    assert [rule.pool for rule in record.rules] == ["office", "ap", "eu", "na"]
    assert record.pools["ap"].values[0].target is not None
    assert record.pools["ap"].values[0].target.address == "127.0.0.113"
