"""The fuzz targets as byte entry points for atheris (libFuzzer), with the same checks as the
Hypothesis tests beside it: `.venv/bin/python bench/fuzz.py --engine atheris` runs them, or
`.venv/bin/python -m tests.fuzz.atheris_targets dns|zones|http [libFuzzer options]`.

atheris is no dependency of the project (``pip install atheris``); `make test` never imports this
module (its name is no test module's).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

# Outside pytest, tests/conftest.py does not run: Hypothesis (imported by the targets) must not
# keep its caches in the working tree either.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "anycastedge-hypothesis")
)

with atheris.instrument_imports(include=["anycastedge"]):
    from tests.fuzz import test_dns_responder as dns_target
    from tests.fuzz import test_http_front as http_target
    from tests.fuzz import test_zone_loader as zone_target


def dns_entry() -> Callable[[bytes], None]:
    """A query: the first byte picks the Responder, transport and client; the rest is sent."""
    world = dns_target.build_world(Path(tempfile.mkdtemp(prefix="anycastedge-fuzz-")))
    hosts = dns_target.HOSTS
    variants = len(dns_target.VARIANTS)

    def one(data: bytes) -> None:
        if not data:
            return
        head, wire = data[0], data[1:]
        query = dns_target.Query(wire, False, bool(head & 1), hosts[(head >> 1) % len(hosts)])
        dns_target.exchange(world, (head >> 5) % variants, query)

    return one


def zone_entry() -> Callable[[bytes], None]:
    """The bytes as a zone file's text (as the loader reads a file: UTF-8 or refused)."""

    def one(data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return  # refused before YAML: test_zones.py's test_zone_files_are_utf8
        zone_target.load(text)

    return one


def http_entry() -> Callable[[bytes], None]:
    """The first byte: half-close or not, and the endpoints' behaviours; the next eight: where
    the rest is cut; the rest: what the client sends."""

    def one(data: bytes) -> None:
        if len(data) < 9:
            return
        flags, cuts, payload = data[0], list(data[1:9]), data[9:]
        net = http_target.Net(["wild"] if flags & 2 else ["ok"], itertools.cycle(cuts or [0]))
        case = http_target.Case("atheris", payload, frozenset(), half_close=bool(flags & 1))
        http_target.exchange(case, [c * 7 for c in cuts[: flags >> 5]], net)
        http_target.check_stream(net)

    return one


ENTRIES = {"dns": dns_entry, "zones": zone_entry, "http": http_entry}


def main() -> None:
    target = sys.argv.pop(1)
    atheris.Setup(sys.argv, ENTRIES[target]())
    atheris.Fuzz()


if __name__ == "__main__":
    main()
