"""genreport's EDNS and header checks, mirrored (tests/support/compliance.py), against NSD and
against `anycastedge serve` for the same zone: both must pass every probe, and agree on the
rcode, the header flags and the OPT's version and flags of every reply.

ISC's genreport itself is not run: no package registry this project installs from carries it
(docs/dns-behaviour.md, "Compliance checks").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.compliance import CD, DO, PROBES, Probe, Reply, ask, problems
from tests.support.nsd import NsdServer, zone_yaml_to_bind
from tests.support.server import REPO_ZONES, ServerHandle, copy_repo_zones, running_server

ZONE = "example.com."

#: Probes NSD 4.6 (Debian's) fails itself: there only anycastedge is judged.
NSD_FAILS = {
    "opcodeflg": "NSD 4.6 copies every flag of an unknown-opcode request (AA, TC, RD, RA, Z, "
    "CD) into its NOTIMP reply, and resets a TCP connection that carries one",
}
#: Where both servers pass but, by design, reply differently (docs/dns-behaviour.md).
ALLOWED = {
    "CD": "we copy CD from the query (RFC 4035 section 3); NSD clears it in an authoritative "
    "reply (section 3.1.6 allows that too)",
    "DO": "we copy DO into a BADVERS reply too (RFC 3225: the DO bit of the query is copied "
    "into the response); NSD leaves it out there",
}


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    zones = copy_repo_zones(tmp_path_factory.mktemp("compliance") / "zones")
    with running_server(zones, probe_zone=ZONE) as handle:
        yield handle


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    out = tmp_path_factory.mktemp("compliance-nsd")
    zone_file = zone_yaml_to_bind(Path(REPO_ZONES), ZONE, out)
    with NsdServer({ZONE: zone_file}, nsid="nsd-peer") as server:
        yield server


def _summary(probe: Probe, reply: Reply) -> tuple[int, int, bool, int, int]:
    """What two conforming servers must agree on: rcode, header flags, the OPT and its bits,
    less the ALLOWED differences."""
    flags, opt_flags = reply.header, reply.opt_flags
    if probe.flags & CD:
        flags &= ~CD
    if probe.version and probe.ednsflags & DO:
        opt_flags &= ~DO
    return reply.rcode, flags, reply.opt, reply.opt_version, opt_flags


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, ours: ServerHandle, nsd: NsdServer) -> None:
    """Both servers pass the probe, and reply with the same rcode, flags and OPT bits."""
    mine = ask(probe, ZONE, ours.host, ours.dns_port, qid=0x2A2A)
    assert problems(probe, mine) == []
    if probe.name in NSD_FAILS:
        return
    theirs = ask(probe, ZONE, nsd.host, nsd.port, qid=0x2A2A)
    assert problems(probe, theirs) == [], f"NSD fails {probe.name}: is the check wrong?"
    assert _summary(probe, mine) == _summary(probe, theirs)


def test_the_checks_catch_what_they_look_for() -> None:
    """The judge itself: replies with each fault are flagged (so a pass above means something)."""
    opcode = next(p for p in PROBES if p.name == "opcodeflg")
    bare = Reply(b"\0" * 12, False, flags=0x8000 | (15 << 11) | 0x0100 | 4, opcode=15, rcode=4)
    assert problems(opcode, bare) == ["rd"]
    edns1 = next(p for p in PROBES if p.name == "edns1opt")
    echoed = Reply(b"\0" * 12, False, flags=0x8000, rcode=16, opt=True, options=[100])
    assert problems(edns1, echoed) == ["echoed"]
    flags = next(p for p in PROBES if p.name == "ednsflags")
    mbz = Reply(b"\0" * 12, False, flags=0x8400, opt=True, opt_flags=0x0080, soa_in_answer=True)
    assert problems(flags, mbz) == ["mbz"]
    plain = next(p for p in PROBES if p.name == "dns")
    assert problems(plain, Reply(b"\0" * 12, False, flags=0x8000)) == ["nosoa", "noaa"]
