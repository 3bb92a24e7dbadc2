"""``serials.json``: the SOA serial served for each zone, so serials never go backwards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anycastedge.statedir.files import field_error, read_record, write_record

FILE = "serials.json"
KIND = "zone-serials"


@dataclass(frozen=True, slots=True)
class ServedSerial:
    """A zone's content digest and the serial it was served with."""

    digest: str
    serial: int


def read_serials(state_dir: Path) -> dict[str, ServedSerial]:
    """Served serials by zone name (with the final dot); StateFileError if the file is unusable."""
    path = state_dir / FILE
    data = read_record(path, KIND)
    if data is None:
        return {}
    try:
        return {
            str(zone): ServedSerial(str(item["digest"]), int(item["serial"]))
            for zone, item in dict(data["zones"]).items()
        }
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise field_error(path, exc) from None


def write_serials(state_dir: Path, serials: dict[str, ServedSerial]) -> None:
    """Save the served serials atomically."""
    write_record(
        state_dir / FILE,
        KIND,
        {
            "zones": {
                z: {"digest": s.digest, "serial": s.serial} for z, s in sorted(serials.items())
            }
        },
    )
