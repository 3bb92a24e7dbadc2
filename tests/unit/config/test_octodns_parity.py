"""Differential test: octoDNS 1.22 and anycastedge agree on which records are valid.

Every record is judged twice: by octoDNS's own ``Record.new`` (with the ttl its YamlProvider fills
in, 3600, and the zone's ``add_record``), and by ``load_zones``, the function ``anycastedge zone
check`` runs, on a one-record zone file. The verdicts (accepted or rejected) must be equal, except
where anycastedge is stricter on purpose: each such difference is named in STRICTER, documented in
docs/zones.md, and asserted to still be a difference so that the list cannot go stale.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from octodns.provider.yaml import YamlProvider
from octodns.record import Record
from octodns.zone import Zone as OctoZone

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.errors import ConfigError, Problem

ORIGIN = "parity.test."
OCTODNS_DEFAULT_TTL = 3600  # YamlProvider's default_ttl
DOCS = Path(__file__).resolve().parents[3] / "docs" / "zones.md"


# --- the two judges ----------------------------------------------------------------------------


def octodns_verdict(name: str, data: Any) -> str | None:
    """None if octoDNS accepts the record, else why not (its first reason or its exception)."""
    provider = YamlProvider("parity", ".", escaped_semicolons=True)
    zone = OctoZone(ORIGIN, [])
    data = copy.deepcopy(data)
    try:
        # As YamlProvider._populate_from_file does: the default ttl is filled in before Record.new.
        if isinstance(data, dict) and "ttl" not in data:
            data["ttl"] = OCTODNS_DEFAULT_TTL
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # octoDNS's deprecation notices
            record = Record.new(zone, name, data, source=provider)
            zone.add_record(record)
    except Exception as exc:  # noqa: BLE001 - any exception is octoDNS refusing the record
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class Ours:
    """Our verdict on a one-record zone: its errors (none: accepted) and warnings."""

    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def accepted(self) -> bool:
        """Whether `zone check` passes the file."""
        return not self.errors


def our_verdict(directory: Path, name: str, data: Any) -> Ours:
    """Write ``{name: data}`` as the zone file parity.test.yaml and load it as `zone check` does."""
    path = directory / f"{ORIGIN.rstrip('.')}.yaml"
    path.write_text(yaml.safe_dump({name: data}, allow_unicode=True), encoding="utf-8")
    try:
        _zones, found = load_zones([path], SoaConfig())
    except ConfigError as exc:
        problems = exc.problems
        return Ours(
            tuple(p for p in problems if not p.warning), tuple(p for p in problems if p.warning)
        )
    return Ours((), tuple(found))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the one-record zone files (rewritten by every check)."""
    return tmp_path_factory.mktemp("parity")


# --- known, intended differences ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stricter:
    """A kind of record octoDNS accepts and anycastedge rejects, on purpose, and an example."""

    id: str
    why: str
    name: str
    data: Any
    covers: Callable[[str, Any], bool]  # does a (name, data) fall under this difference?


def _values(data: Any) -> list[Any]:
    if not isinstance(data, dict):
        return []
    values = data.get("values", data.get("value"))
    return values if isinstance(values, list) else [values]


NAME_FIELDS: dict[str, tuple[str, ...]] = {
    "CNAME": ("",),
    "DNAME": ("",),
    "NS": ("",),
    "PTR": ("",),
    "MX": ("exchange", "value"),
    "SRV": ("target",),
    "NAPTR": ("replacement",),
    "SVCB": ("targetname",),
    "HTTPS": ("targetname",),
}


def _names_in_data(data: Any) -> list[Any]:
    rdtype = data.get("type") if isinstance(data, dict) else None
    found = []
    for value in _values(data):
        for key in NAME_FIELDS.get(str(rdtype), ()):
            if not key:
                found.append(value)
            elif isinstance(value, dict) and value.get(key) is not None:
                found.append(value[key])
    return found


def _relative_name(name: str, data: Any) -> bool:
    return any(isinstance(n, str) and n and not n.endswith(".") for n in _names_in_data(data))


def _template(name: str, data: Any) -> bool:
    return any(isinstance(n, str) and "{" in n and "}" in n for n in _names_in_data(data))


WIRE_RANGES: dict[str, dict[str, int]] = {
    "MX": {"preference": 0xFFFF, "priority": 0xFFFF},
    "SRV": {"priority": 0xFFFF, "weight": 0xFFFF, "port": 0xFFFF},
    "URI": {"priority": 0xFFFF, "weight": 0xFFFF},
    "NAPTR": {"order": 0xFFFF, "preference": 0xFFFF},
    "SSHFP": {"algorithm": 0xFF, "fingerprint_type": 0xFF},
    "DS": {
        "key_tag": 0xFFFF,
        "algorithm": 0xFF,
        "digest_type": 0xFF,
        "flags": 0xFFFF,
        "protocol": 0xFF,
    },
}


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _out_of_wire_range(name: str, data: Any) -> bool:
    limits = WIRE_RANGES.get(str(data.get("type")) if isinstance(data, dict) else "", {})
    for value in _values(data):
        if not isinstance(value, dict):
            continue
        params = value.get("svcparams")
        port = _as_int(params.get("port")) if isinstance(params, dict) else None
        if port is not None and not 0 <= port <= 0xFFFF:
            return True
        for key, high in limits.items():
            number = _as_int(value.get(key))
            if number is not None and not 0 <= number <= high:
                return True
    return False


def _lenient(name: str, data: Any) -> bool:
    meta = data.get("octodns") if isinstance(data, dict) else None
    return isinstance(meta, dict) and bool(meta.get("lenient"))


def _ttl_not_a_wire_ttl(name: str, data: Any) -> bool:
    ttl = data.get("ttl") if isinstance(data, dict) else None
    if ttl is None:
        return False
    return isinstance(ttl, bool | float) or (isinstance(ttl, int) and ttl > 2**31 - 1)


def _fields(data: Any) -> list[dict[str, Any]]:
    return [v for v in _values(data) if isinstance(v, dict)]


def _boolean(name: str, data: Any) -> bool:
    return any(isinstance(f, bool) for v in _fields(data) for f in v.values())


def _null_field(name: str, data: Any) -> bool:
    return any(f is None for v in _fields(data) for k, f in v.items() if k != "svcparams")


BINARY_FIELDS = {
    "SSHFP": ("fingerprint", "fingerprint_type", {1: 40, 2: 64}),
    "TLSA": ("certificate_association_data", "matching_type", {1: 64, 2: 128}),
    "DS": ("digest", "digest_type", {1: 40, 2: 64, 3: 64, 4: 96}),
}


def _undecodable(name: str, data: Any) -> bool:
    rdtype = data.get("type") if isinstance(data, dict) else None
    if rdtype == "OPENPGPKEY":
        return any(not _base64(v) for v in _values(data))
    if rdtype not in BINARY_FIELDS:
        return False
    key, kind_key, lengths = BINARY_FIELDS[str(rdtype)]
    for value in _fields(data):
        if "public_key" in value or "flags" in value:  # DS's deprecated names
            value = {"digest": value.get("public_key"), "digest_type": value.get("algorithm")}
        text, kind = value.get(key), _as_int(value.get(kind_key))
        if not isinstance(text, str | int) or not re.fullmatch(r"([0-9a-fA-F]{2})+", str(text)):
            return True
        if len(str(text)) != lengths.get(kind or 0, len(str(text))):
            return True
        if rdtype == "DS" and kind == 0:
            return True
    return False


def _base64(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return False


TEXT_FIELDS = {"CAA": ("tag", "value"), "NAPTR": ("service", "regexp")}


def _not_text(name: str, data: Any) -> bool:
    keys = TEXT_FIELDS.get(str(data.get("type")) if isinstance(data, dict) else "", ())
    return any(not isinstance(v.get(k), str | None) for v in _fields(data) for k in keys)


def _caa_tag(name: str, data: Any) -> bool:
    return data.get("type") == "CAA" and any(
        not re.fullmatch(r"[A-Za-z0-9]{1,255}", str(v.get("tag"))) for v in _fields(data)
    )


def _naptr_replacement(name: str, data: Any) -> bool:
    if data.get("type") != "NAPTR":
        return False
    for value in _fields(data):
        target = value.get("replacement")
        if target == ".":
            continue
        if not isinstance(target, str) or not target.endswith(".") or " " in target:
            return True
        try:
            dns.name.from_text(target)
        except dns.exception.DNSException:
            return True
    return False


def _svcb_rules(name: str, data: Any) -> bool:
    for value in _fields(data):
        params = value.get("svcparams")
        if not isinstance(params, dict):
            continue
        if "no-default-alpn" in params and "alpn" not in params:
            return True
        mandatory = params.get("mandatory")
        if isinstance(mandatory, list) and any(k not in params for k in mandatory):
            return True
    return False


STRICTER: list[Stricter] = [
    Stricter(
        "relative name",
        "a name in record data must end with a dot: served as written, a relative name would "
        "point somewhere else (octoDNS only warns in its best-practice set)",
        "www",
        {"type": "CNAME", "value": "web.example.com"},
        _relative_name,
    ),
    Stricter(
        "template",
        "{placeholders} in names are expanded by octoDNS processors, not by a DNS server",
        "www",
        {"type": "CNAME", "value": "{zone}.cdn.example.com."},
        _template,
    ),
    Stricter(
        "out of wire range",
        "a number must fit its wire field (16 or 8 bits); octoDNS's default validators only "
        "check that it is an integer (and SvcParam port only that it is not above 65535)",
        "_sip._tcp",
        {"type": "SRV", "value": {"priority": 1, "weight": 1, "port": 70000, "target": "h.ex."}},
        _out_of_wire_range,
    ),
    Stricter(
        "lenient",
        "octodns.lenient makes octoDNS load an invalid record; a server cannot serve it",
        "txt",
        {"type": "TXT", "value": "v=spf1;-all", "octodns": {"lenient": True}},
        _lenient,
    ),
    Stricter(
        "ttl",
        "a ttl must be a whole number of seconds up to 2^31-1 (RFC 2181): octoDNS truncates "
        "floats, reads true as 1 and has no upper bound",
        "www",
        {"type": "A", "value": "192.0.2.1", "ttl": 300.5},
        _ttl_not_a_wire_ttl,
    ),
    Stricter(
        "boolean",
        "true/false (or yes/no) is not a number: octoDNS takes true as 1",
        "mx",
        {"type": "MX", "value": {"preference": True, "exchange": "mx.example.com."}},
        _boolean,
    ),
    Stricter(
        "null field",
        "a field written but left empty (null) is missing: octoDNS only checks that the key is "
        "there, and would publish the text None",
        "caa",
        {"type": "CAA", "value": {"flags": 0, "tag": "issue", "value": None}},
        _null_field,
    ),
    Stricter(
        "binary data",
        "hex and base64 fields must decode, and a digest must have its type's length (DS digest "
        "type 0 is reserved): octoDNS's default validators do not look inside them",
        "key",
        {"type": "OPENPGPKEY", "value": "not base64!"},
        _undecodable,
    ),
    Stricter(
        "not text",
        "text fields (CAA tag and value, NAPTR service and regexp) must be strings: YAML reads "
        "12 as a number, which octoDNS takes, or fails on when it sorts the values",
        "caa",
        {"type": "CAA", "value": {"tag": "issue", "value": 12}},
        _not_text,
    ),
    Stricter(
        "CAA tag",
        "a CAA tag is 1 to 255 ASCII letters and digits (RFC 8659 4.1; octoDNS checks it only "
        "in its strict set)",
        "caa",
        {"type": "CAA", "value": {"tag": "is sue", "value": "ca.example.net"}},
        _caa_tag,
    ),
    Stricter(
        "NAPTR replacement",
        "a NAPTR replacement is . or an absolute domain name; octoDNS does not check it",
        "naptr",
        {
            "type": "NAPTR",
            "value": {
                "order": 1,
                "preference": 1,
                "flags": "U",
                "service": "E2U",
                "regexp": "!^.*$!x!",
                "replacement": "a..example.com.",
            },
        },
        _naptr_replacement,
    ),
    Stricter(
        "SvcParams",
        "keys listed in mandatory must be set, and no-default-alpn needs alpn (RFC 9460 8)",
        "svc",
        {
            "type": "SVCB",
            "value": {
                "svcpriority": 1,
                "targetname": "svc.example.com.",
                "svcparams": {"mandatory": ["alpn"]},
            },
        },
        _svcb_rules,
    ),
]


def stricter_for(name: str, data: Any) -> list[str]:
    """The ids of the intended differences that a record falls under."""
    return [s.id for s in STRICTER if s.covers(name, data)]


@pytest.mark.parametrize("case", STRICTER, ids=lambda s: s.id)
def test_each_intended_difference_is_still_a_difference(workdir: Path, case: Stricter) -> None:
    """octoDNS accepts the example, anycastedge rejects it: the difference is real and current."""
    assert octodns_verdict(case.name, case.data) is None
    assert not our_verdict(workdir, case.name, case.data).accepted
    assert stricter_for(case.name, case.data) == [case.id]


def test_each_intended_difference_is_documented() -> None:
    """docs/zones.md lists every intended difference under its own heading."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Where anycastedge is stricter than octoDNS", 1)[1].split("\n## ")[0]
    for case in STRICTER:
        assert f"**{case.id}**" in section, case.id


# --- tables of cases ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One record ``name`` -> ``data`` to judge."""

    id: str
    name: str
    data: Any


def _cases(rdtype: str, name: str, good: Any, fields: dict[str, list[Any]]) -> Iterator[Case]:
    """The valid ``good`` value, then each field replaced by each of its variants (or removed)."""
    yield Case(f"{rdtype} ok", name, {"type": rdtype, "value": good})
    yield Case(f"{rdtype} values", name, {"type": rdtype, "values": [good, good]})
    for key, variants in fields.items():
        for variant in variants:
            value = dict(good)
            if variant is MISSING:
                del value[key]
                label = "missing"
            else:
                value[key] = variant
                label = repr(variant)
            yield Case(f"{rdtype} {key}={label}", name, {"type": rdtype, "value": value})


MISSING: Any = object()
SHA1 = "2bb183af5f22588179a53b0a98631fad1a292118"
SHA256 = "0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"
INTS = [MISSING, None, "", "x", "10", -1, 65535, 65536, 1.5, True, [1]]
BYTE_INTS = [MISSING, None, "x", "1", -1, 255, 256, 0, True]
NAMES = [
    MISSING,
    None,
    "",
    ".",
    "host.example.com",
    "host.example.com.",
    "host",
    "host.",
    "-bad.example.com.",
    "bad-.example.com.",
    "_sip.example.com.",
    "*.example.com.",
    "a..example.com.",
    "has space.example.com.",
    "bücher.example.com.",
    "192.0.2.1.",
    ("x" * 64) + ".example.com.",
    ".".join(["a" * 60] * 5) + ".",
    "{zone}.example.com.",
    12,
]
TEXTS = [MISSING, None, "", "x", 12, "a;b", "a\\;b", "a\\\\;b", " ;", "é", '"q"', ["a"]]

SIMPLE: list[Case] = []
for _rdtype, _name, _goods, _bads in [
    ("A", "www", ["192.0.2.1"], ["192.0.2.300", "2001:db8::1", "", None, 12, "1.2.3", "x"]),
    ("AAAA", "www", ["2001:db8::1", "2001:0db8::0001"], ["192.0.2.1", "2001:db8::g", "", None]),
    ("CNAME", "www", [n for n in NAMES if isinstance(n, str)], [None, ["a.example.com."]]),
    ("DNAME", "old", [n for n in NAMES if isinstance(n, str)], [None]),
    ("NS", "sub", [n for n in NAMES if isinstance(n, str)], [None]),
    ("PTR", "ptr", [n for n in NAMES if isinstance(n, str)], [None]),
    ("TXT", "txt", [t for t in TEXTS if t is not MISSING], ["x" * 600]),
    ("SPF", "spf", [t for t in TEXTS if t is not MISSING], ["v=spf1 -all"]),
    ("OPENPGPKEY", "key", ["AAECAwQ=", "not base64!", "", None, 12], []),
]:
    for _value in _goods + _bads:
        SIMPLE.append(Case(f"{_rdtype} {_value!r}", _name, {"type": _rdtype, "value": _value}))

LOC_GOOD = {
    "lat_degrees": 31,
    "lat_minutes": 58,
    "lat_seconds": 52.1,
    "lat_direction": "S",
    "long_degrees": 115,
    "long_minutes": 49,
    "long_seconds": 11.7,
    "long_direction": "E",
    "altitude": 20,
    "size": 10,
    "precision_horz": 10,
    "precision_vert": 2,
}
#: Per structured type: an owner name, a valid value, and variants of each field (MISSING: absent).
SPECS: list[tuple[str, str, dict[str, Any], dict[str, list[Any]]]] = [
    (
        "MX",
        "mx",
        {"preference": 10, "exchange": "mx.example.com."},
        {"preference": INTS, "exchange": NAMES},
    ),
    ("MX", "mx-legacy", {"priority": 10, "value": "mx.example.com."}, {"value": NAMES}),
    (
        "SRV",
        "_sip._tcp",
        {"priority": 10, "weight": 20, "port": 5060, "target": "sip.example.com."},
        {"priority": INTS, "weight": INTS, "port": INTS, "target": NAMES},
    ),
    (
        "CAA",
        "caa",
        {"flags": 0, "tag": "issue", "value": "ca.example.net"},
        {
            "flags": [MISSING, None, "x", 128, 255, 256, -1, "0"],
            "tag": [MISSING, None, "", "is sue", "issue!", "x" * 300, 12],
            "value": [MISSING, None, "", ";", 'a"b', 12],
        },
    ),
    (
        "NAPTR",
        "naptr",
        {
            "order": 100,
            "preference": 10,
            "flags": "U",
            "service": "SIP+D2U",
            "regexp": "!^.*$!sip:info@example.net!",
            "replacement": ".",
        },
        {
            "order": INTS,
            "preference": INTS,
            "flags": [MISSING, None, "", "S", "A", "P", "u", "X", "SU"],
            "service": [MISSING, None, "", 12],
            "regexp": [MISSING, None, "", 12],
            "replacement": NAMES,
        },
    ),
    (
        "SSHFP",
        "sshfp",
        {
            "algorithm": 1,
            "fingerprint_type": 1,
            "fingerprint": "bf6b6825d2977c511a475bbefb88aad54a92ac73",
        },
        {
            "algorithm": [*BYTE_INTS, 4, 5],
            "fingerprint_type": [*BYTE_INTS, 2, 3],
            "fingerprint": [MISSING, None, "", "zz", "bf6b", "g" * 40, 12],
        },
    ),
    (
        "TLSA",
        "_443._tcp",
        {
            "certificate_usage": 3,
            "selector": 1,
            "matching_type": 1,
            "certificate_association_data": SHA256,
        },
        {
            "certificate_usage": [MISSING, None, "x", "1", -1, 0, 4],
            "selector": [MISSING, None, "x", -1, 0, 2],
            "matching_type": [MISSING, None, "x", -1, 0, 2, 3],
            "certificate_association_data": [MISSING, None, "", "zz", "abc", 12],
        },
    ),
    (
        "DS",
        "sub",
        {"key_tag": 60485, "algorithm": 5, "digest_type": 1, "digest": SHA1},
        {
            "key_tag": INTS,
            "algorithm": BYTE_INTS,
            "digest_type": BYTE_INTS,
            "digest": [MISSING, None, "", "zz", "abc", 12],
        },
    ),
    (
        "DS",
        "legacy",
        {"flags": 60485, "protocol": 5, "algorithm": 1, "public_key": SHA1},
        {
            "flags": INTS,
            "protocol": BYTE_INTS,
            "algorithm": BYTE_INTS,
            "public_key": [MISSING, None, "", "zz"],
        },
    ),
    (
        "URI",
        "_ftp._tcp",
        {"priority": 10, "weight": 1, "target": "https://www.example.net/"},
        {"priority": INTS, "weight": INTS, "target": [MISSING, None, "", "x", 12]},
    ),
    (
        "LOC",
        "loc",
        LOC_GOOD,
        {
            "lat_degrees": [MISSING, None, "x", -1, 90, 91, 1.5],
            "lat_minutes": [MISSING, "x", 59, 60],
            "lat_seconds": [MISSING, "x", 0, 59.999, 60],
            "lat_direction": [MISSING, None, "", "N", "E", "n"],
            "long_degrees": [MISSING, 180, 181],
            "long_minutes": [60],
            "long_seconds": [-1, 60],
            "long_direction": [MISSING, "W", "N", "x"],
            "altitude": [MISSING, "x", -100000, -100001, 42849672.95, 42849673],
            "size": [MISSING, "x", 0, 90000000, 90000001],
            "precision_horz": [-1, 90000001],
            "precision_vert": [MISSING, 90000001],
        },
    ),
    (
        "SVCB",
        "svc",
        {"svcpriority": 1, "targetname": "svc.example.com.", "svcparams": {"alpn": ["h2"]}},
        {
            "svcpriority": [MISSING, None, "x", -1, 0, 65535, 65536],
            "targetname": NAMES,
            "svcparams": [
                MISSING,
                None,
                {},
                {"alpn": "h2"},
                {"alpn": []},
                {"port": 443},
                {"port": "x"},
                {"port": 70000},
                {"port": -1},
                {"ipv4hint": ["192.0.2.1"]},
                {"ipv4hint": ["2001:db8::1"]},
                {"ipv6hint": ["2001:db8::1"]},
                {"no-default-alpn": None},
                {"no-default-alpn": "x"},
                {"mandatory": ["alpn"]},
                {"ech": "AAEC"},
                {"key65000": "x"},
                {"key70000": "x"},
                {"unknown": "x"},
            ],
        },
    ),
    (
        "HTTPS",
        "",
        {"svcpriority": 1, "targetname": ".", "svcparams": {"alpn": ["h2", "h3"]}},
        {"svcpriority": [0, "1"], "targetname": [".", "www.parity.test.", "www"]},
    ),
]

STRUCTURED: list[Case] = [c for spec in SPECS for c in _cases(*spec)]

RECORD_LEVEL: list[Case] = [
    Case("no type", "www", {"value": "192.0.2.1"}),
    Case("unknown type", "www", {"type": "NOPE", "value": "192.0.2.1"}),
    Case("lower-case type", "www", {"type": "a", "value": "192.0.2.1"}),
    Case("no value", "www", {"type": "A"}),
    Case("empty values", "www", {"type": "A", "values": []}),
    Case("values and value", "www", {"type": "A", "values": ["192.0.2.1"], "value": "x"}),
    Case("not a mapping", "www", "192.0.2.1"),
    Case("name @", "@", {"type": "A", "value": "192.0.2.1"}),
    Case("name with a space", "a b", {"type": "A", "value": "192.0.2.1"}),
    Case("name with a double dot", "a..b", {"type": "A", "value": "192.0.2.1"}),
    Case("name ending in a dot", "a.", {"type": "A", "value": "192.0.2.1"}),
    Case("long label", "x" * 64, {"type": "A", "value": "192.0.2.1"}),
    Case("long name", ".".join(["a" * 60] * 4), {"type": "A", "value": "192.0.2.1"}),
    Case("unicode name", "bücher", {"type": "A", "value": "192.0.2.1"}),
    Case("wildcard", "*", {"type": "A", "value": "192.0.2.1"}),
    Case("underscore", "_dmarc", {"type": "TXT", "value": "v=DMARC1"}),
    Case("ttl 0", "www", {"type": "A", "value": "192.0.2.1", "ttl": 0}),
    Case("ttl -1", "www", {"type": "A", "value": "192.0.2.1", "ttl": -1}),
    Case("ttl string", "www", {"type": "A", "value": "192.0.2.1", "ttl": "300"}),
    Case("ttl word", "www", {"type": "A", "value": "192.0.2.1", "ttl": "x"}),
    Case("ttl float", "www", {"type": "A", "value": "192.0.2.1", "ttl": 300.5}),
    Case("ttl true", "www", {"type": "A", "value": "192.0.2.1", "ttl": True}),
    Case("ttl huge", "www", {"type": "A", "value": "192.0.2.1", "ttl": 2**31}),
    Case("ttl null", "www", {"type": "A", "value": "192.0.2.1", "ttl": None}),
    Case("CNAME at apex", "", {"type": "CNAME", "value": "www.example.com."}),
    Case("CNAME two values", "www", {"type": "CNAME", "values": ["a.ex.com.", "b.ex.com."]}),
    Case(
        "SRV bad name",
        "sip",
        {
            "type": "SRV",
            "value": {"priority": 1, "weight": 1, "port": 1, "target": "s.example.com."},
        },
    ),  # fmt: skip
    Case(
        "URI bad name", "ftp", {"type": "URI", "value": {"priority": 1, "weight": 1, "target": "x"}}
    ),  # fmt: skip
    Case("lenient", "www", {"type": "A", "value": "x", "octodns": {"lenient": True}}),
    Case(
        "healthcheck protocol",
        "www",
        {"type": "A", "value": "192.0.2.1", "octodns": {"healthcheck": {"protocol": "ICMP"}}},
    ),  # fmt: skip
    Case(
        "bad healthcheck protocol",
        "www",
        {"type": "A", "value": "192.0.2.1", "octodns": {"healthcheck": {"protocol": "GOPHER"}}},
    ),  # fmt: skip
    # Types octoDNS knows and anycastedge skips with a warning: still judged.
    Case("ALIAS ok", "", {"type": "ALIAS", "value": "www.example.com."}),
    Case("ALIAS below the apex", "www", {"type": "ALIAS", "value": "www.example.com."}),
    Case("ALIAS bad target", "", {"type": "ALIAS", "value": "-x"}),
    Case(
        "URLFWD ok",
        "fwd",
        {
            "type": "URLFWD",
            "value": {"path": "/", "target": "http://x/", "code": 301, "masking": 2, "query": 0},
        },
    ),  # fmt: skip
    Case(
        "URLFWD bad code",
        "fwd",
        {
            "type": "URLFWD",
            "value": {"path": "/", "target": "x", "code": 200, "masking": 2, "query": 0},
        },
    ),  # fmt: skip
    Case(
        "URLFWD missing target",
        "fwd",
        {"type": "URLFWD", "value": {"path": "/", "code": 301, "masking": 2, "query": 0}},
    ),  # fmt: skip
]

CASES = SIMPLE + STRUCTURED + RECORD_LEVEL


def _check(workdir: Path, name: str, data: Any) -> None:
    theirs = octodns_verdict(name, data)
    ours = our_verdict(workdir, name, data)
    if (theirs is None) == ours.accepted:
        return
    intended = stricter_for(name, data)
    assert theirs is None and not ours.accepted and intended, (
        f"octoDNS: {theirs or 'accepts'}; anycastedge: {[str(p) for p in ours.errors] or 'accepts'}"
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_verdicts_agree(workdir: Path, case: Case) -> None:
    """octoDNS and anycastedge accept or reject the record alike (or it is an intended case)."""
    _check(workdir, case.name, case.data)


def test_the_tables_cover_every_type_we_accept_or_skip() -> None:
    """Every type the loader serves or skips is exercised valid and invalid."""
    from anycastedge.config.records import CONVERTERS, PROVIDER_ONLY_TYPES

    typed = {c.data.get("type") for c in CASES if isinstance(c.data, dict)}
    assert set(CONVERTERS) | PROVIDER_ONLY_TYPES <= typed


# --- generated records -------------------------------------------------------------------------

SIMPLE_VALUES: dict[str, tuple[str, list[Any]]] = {
    "A": ("www", ["192.0.2.1", "192.0.2.300", "2001:db8::1", "", None, 12, "x"]),
    "AAAA": ("www", ["2001:db8::1", "192.0.2.1", "2001:db8::g", ""]),
    "CNAME": ("www", [n for n in NAMES if n is not MISSING]),
    "DNAME": ("old", [n for n in NAMES if n is not MISSING]),
    "NS": ("sub", [n for n in NAMES if n is not MISSING]),
    "PTR": ("ptr", [n for n in NAMES if n is not MISSING]),
    "TXT": ("txt", [t for t in TEXTS if t is not MISSING]),
    "SPF": ("spf", [t for t in TEXTS if t is not MISSING]),
    "OPENPGPKEY": ("key", ["AAECAwQ=", "not base64!", "", None]),
    "ALIAS": ("", [n for n in NAMES if n is not MISSING]),
}
OWNER_NAMES = ["", "www", "_sip._tcp", "*", "@", "a..b", "x" * 64, "_x", "bücher"]
TTLS = [MISSING, 0, 300, "300", -1, "x", None, 2**31, 1.5, True]


@st.composite
def records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A record of any type we serve or skip, each field valid, invalid or absent."""
    kind = draw(st.sampled_from(sorted(SIMPLE_VALUES) + [str(i) for i in range(len(SPECS))]))
    if kind in SIMPLE_VALUES:
        name, pool = SIMPLE_VALUES[kind]
        rdtype = kind
        values = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    else:
        rdtype, name, good, fields = SPECS[int(kind)]
        values = []
        for _ in range(draw(st.integers(1, 2))):
            value = dict(good)
            for key, variants in fields.items():
                if draw(st.integers(0, 3)) == 0:  # a quarter of the fields are not the good one
                    variant = draw(st.sampled_from(variants))
                    if variant is MISSING:
                        value.pop(key, None)
                    else:
                        value[key] = variant
            values.append(value)
    data: dict[str, Any] = {"type": rdtype}
    if len(values) == 1 and draw(st.booleans()):
        data["value"] = values[0]
    else:
        data["values"] = values
    ttl = draw(st.sampled_from(TTLS))
    if ttl is not MISSING:
        data["ttl"] = ttl
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(OWNER_NAMES))
    return name, data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records())
def test_generated_records_get_the_same_verdict(workdir: Path, record: tuple[str, Any]) -> None:
    """Records with valid, invalid and missing fields: octoDNS and we agree, or it is intended."""
    name, data = record
    _check(workdir, name, data)
