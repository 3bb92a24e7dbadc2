"""Zone files in octoDNS's YamlProvider format, built into validated Zone models."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import warnings
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from octodns.record import Record as OctoRecord
from octodns.record import ValidationError as OctoValidationError
from octodns.zone import Zone as OctoZone

from anycastedge.config.dynamic import read_dynamic
from anycastedge.config.key_order import KeyOrder, nested_key_order
from anycastedge.config.pop import SoaConfig
from anycastedge.config.records import (
    CONVERTERS,
    PROVIDER_ONLY_TYPES,
    SINGLE_VALUE_TYPES,
    to_wire,
)
from anycastedge.config.source import (
    MarkedDict,
    Unusual,
    load_yaml,
    read_bytes,
    top_level_items,
    writable_by_others,
)
from anycastedge.dns.compiled import (
    WireNode,
    below,
    encode_rrs,
    make_entry,
    rdata_names,
)
from anycastedge.dns.compiled import to_wire as name_wire
from anycastedge.dns.zone import Name, RRset, Zone, ZoneSet, assemble_zone
from anycastedge.errors import ConfigError, Location, Problem
from anycastedge.gslb.model import DynamicRecord

DEFAULT_TTL = 3600  # octoDNS's default
PROVIDER_NAME = "anycastedge"  # what octodns.included/excluded lists call us
RECORD_KEYS = frozenset({"type", "ttl", "value", "values", "octodns", "dynamic", "anycastedge"})
# Keys octoDNS (or its plugins) understands that change nothing in what a DNS server serves.
IGNORED_KEYS = frozenset({"geo"})
# Types whose owner name must be _service._proto (or a wildcard), as octoDNS requires.
SERVICE_NAMED_TYPES = frozenset({"SRV", "URI"})
SERVICE_NAME = re.compile(r"(\*|_[^.]+)\.[^.]+")
OCTODNS_HEALTHCHECK_PROTOCOLS = ("HTTP", "HTTPS", "ICMP", "TCP", "UDP")
# Printable ASCII labels without dots or backslashes, which dnspython takes as they are.
_PLAIN_OWNER = re.compile(r"[!-\-/-\[\]-~]{1,63}(?:\.[!-\-/-\[\]-~]{1,63})*")
A, AAAA, NS, DS, CNAME, DNAME = (
    int(dns.rdatatype.from_text(t)) for t in ("A", "AAAA", "NS", "DS", "CNAME", "DNAME")
)
_KINDS = frozenset({NS, DS, CNAME, DNAME})
_IN = dns.rdataclass.IN
_type = dns.rdatatype.RdataType.make
TYPE_CODES = {name: int(dns.rdatatype.from_text(name)) for name in CONVERTERS}
_DIGEST_HEAD = struct.Struct("!HI")
_U16 = struct.Struct("!H")


class Served(Protocol):
    """What a zone was served with before: enough to keep its serial growing."""

    @property
    def digest(self) -> str: ...

    @property
    def serial(self) -> int: ...


@dataclass(slots=True)
class _Builder:
    origin: Name
    path: str
    origin_wire: bytes = b""
    problems: list[Problem] = field(default_factory=list)
    order: list[Problem] = field(default_factory=list)  # key-order warnings, reported first
    nodes: dict[bytes, WireNode] = field(default_factory=dict)
    first: dict[bytes, Location] = field(default_factory=dict)  # each owner's first record
    kinds: dict[int, list[bytes]] = field(default_factory=dict)  # NS, DS, CNAME, DNAME owners
    apex_ns: list[str] = field(default_factory=list)
    dynamic: dict[tuple[Name, int], DynamicRecord] = field(default_factory=dict)
    dynamic_text: list[str] = field(default_factory=list)  # what the serial follows
    digest: int = 0  # the sum of every RRset's hash: the same whatever the order in the file

    def problem(self, subject: str, message: str, where: Location, warning: bool = False) -> None:
        self.problems.append(Problem(message, where, subject or "@", warning))

    def add_name(self, key: Any, entry: Any, where: Location) -> None:
        subject = "" if key is None else str(key)
        if subject == "@":
            self.problem(subject, 'invalid name "@", use "" instead', where)
            return
        owner = _owner_wire(subject, self.origin_wire)
        if owner is None:
            try:
                name = dns.name.from_text(subject, self.origin) if subject else self.origin
                owner = name_wire(name.canonicalize())
            except dns.exception.DNSException as exc:
                self.problem(subject, f"invalid name: {exc}", where)
                return
            if any(c.isspace() for c in subject) or subject.endswith("."):
                self.problem(subject, "invalid name: must be relative, without whitespace", where)
                return
        entries = entry if isinstance(entry, list) else [entry]
        for record in entries:
            here = record.location if isinstance(record, MarkedDict) else where
            self.add_record(subject, owner, record, here)

    def add_record(self, subject: str, owner: bytes, record: Any, where: Location) -> None:
        if not isinstance(record, dict):
            self.problem(subject, "a record must be a mapping with type and value(s)", where)
            return
        rdtype = str(record.get("type", ""))
        if not rdtype:
            self.problem(subject, "missing type", where)
            return
        if rdtype in PROVIDER_ONLY_TYPES:
            # Not served, but octoDNS still validates it: so do we, with octoDNS itself.
            for reason in provider_only_reasons(self.origin.to_text(), subject, record):
                self.problem(subject, reason, where)
        if not self._served_by_us(subject, rdtype, record, where):
            return
        if rdtype in PROVIDER_ONLY_TYPES:
            self.problem(subject, f"{rdtype} is provider-only, not served", where, warning=True)
            return
        if rdtype not in CONVERTERS:
            hint = " (types are upper case)" if rdtype.upper() in CONVERTERS else ""
            self.problem(subject, f"unknown record type {rdtype}{hint}", where)
            return
        # Like octoDNS, report these with whatever else is wrong with the values.
        ok = True
        if rdtype in SERVICE_NAMED_TYPES and not SERVICE_NAME.match(subject):
            self.problem(subject, f"invalid name for {rdtype} record", where)
            ok = False
        if "dynamic" not in record and not healthcheck_protocol_ok(record):
            self.problem(subject, "invalid healthcheck protocol", where)
            ok = False
        for key in record:
            if key not in RECORD_KEYS:
                if key in IGNORED_KEYS:
                    self.problem(subject, f"octoDNS key {key!r} ignored", where, warning=True)
                else:
                    self.problem(subject, f"unknown key {key!r} ignored", where, warning=True)
        ttl = read_ttl(record.get("ttl", DEFAULT_TTL))
        if ttl is None:
            self.problem(subject, f'invalid ttl "{record.get("ttl")}"', where)
            return
        values: Any
        if rdtype in SINGLE_VALUE_TYPES:
            # octoDNS reads these from `value` only; a list there is not a name either.
            if "value" not in record and "values" in record:
                self.problem(subject, f"{rdtype} takes a single value", where)
                return
            values = [record.get("value")]
        else:
            values = record.get("values")
            if values is None:
                values = record.get("value")
            if values is None or values == []:
                self.problem(subject, "missing value(s)", where)
                return
            if not isinstance(values, list):
                values = [values]
        rdatas: dict[bytes, bytes] = {}  # canonical form -> wire: equal values once, in order
        for value in values:
            try:
                wire, canonical = to_wire(rdtype, value)
            except ValueError as exc:
                for reason in getattr(exc, "reasons", None) or (str(exc),):
                    self.problem(subject, reason, where)
                ok = False
                continue
            rdatas.setdefault(canonical, wire)
        if not ok:
            return
        code = TYPE_CODES[rdtype]
        node = self.nodes.get(owner)
        if node is not None and code in node:
            self.problem(subject, f"more than one {rdtype} record at this name", where)
            return
        if "dynamic" in record:
            name = dns.name.from_wire(owner, 0)[0]
            dynamic = read_dynamic(
                record,
                rdtype,
                name,
                ttl,
                tuple(dns.rdata.from_wire(_IN, _type(code), w, 0, len(w)) for w in rdatas.values()),
                where,
                lambda message, at, warning: self.problem(subject, message, at, warning),
            )
            if dynamic is None:
                return
            self.dynamic[(name, code)] = dynamic
            extras = {k: record.get(k) for k in ("dynamic", "anycastedge", "octodns")}
            self.dynamic_text.append(
                f"{dynamic.label} {json.dumps(extras, sort_keys=True, default=str)}"
            )
        elif "anycastedge" in record:
            self.problem(subject, "anycastedge options apply to dynamic records only", where, True)
        if node is None:
            node = self.nodes[owner] = {}
            self.first[owner] = where
        rrs = encode_rrs(code, ttl, rdatas.values())
        node[code] = make_entry(code, len(rdatas), rrs, self.origin_wire)
        if code in _KINDS:
            self.kinds.setdefault(code, []).append(owner)
        if code == NS and owner == self.origin_wire:
            self.apex_ns.extend(str(v) for v in values)
        head = owner + _DIGEST_HEAD.pack(code, ttl)
        body = b"".join(_U16.pack(len(c)) + c for c in sorted(rdatas))
        self.digest += int.from_bytes(hashlib.blake2b(head + body, digest_size=16).digest())

    def _served_by_us(
        self, subject: str, rdtype: str, record: Mapping[str, Any], where: Location
    ) -> bool:
        meta = record.get("octodns") or {}
        if not isinstance(meta, dict):
            return True
        if meta.get("ignored"):
            self.problem(subject, f"{rdtype} has octodns.ignored, not served", where, warning=True)
            return False
        included = meta.get("included")
        excluded = meta.get("excluded") or []
        for key, listed in (("included", included), ("excluded", excluded)):
            # octoDNS takes a list of provider names; anything else would be searched as one.
            if listed is not None and not isinstance(listed, list):
                at = meta.where(key) if isinstance(meta, MarkedDict) else where
                self.problem(subject, f"octodns.{key} must be a list of provider names", at)
                return False
        if (included and PROVIDER_NAME not in included) or PROVIDER_NAME in excluded:
            self.problem(
                subject, f"{rdtype} is not for provider {PROVIDER_NAME!r}, not served", where, True
            )
            return False
        return True


def _owner_wire(subject: str, origin: bytes) -> bytes | None:
    """The owner's lower-cased wire name for a plain relative name (printable ASCII, no escapes,
    no empty label); None for any other, which dnspython reads (and checks)."""
    if not subject:
        return origin
    if subject == "@" or not _PLAIN_OWNER.fullmatch(subject):  # "@" alone is the origin
        return None
    wire = (
        b"".join(bytes((len(label),)) + label for label in subject.lower().encode().split(b"."))
        + origin
    )
    return wire if len(wire) <= 255 else None


def read_ttl(value: Any) -> int | None:
    """The ttl as a number of seconds, or None if it is not one a DNS server can serve.

    octoDNS takes anything ``int()`` takes; we take whole numbers (written as numbers or strings)
    from 0 to 2^31-1 (RFC 2181 8), and not true/false or fractions, which ``int()`` would
    silently turn into 1 or truncate.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        ttl = int(value)
    except ValueError:
        return None
    return ttl if 0 <= ttl <= 2**31 - 1 else None


def healthcheck_protocol_ok(record: Mapping[str, Any]) -> bool:
    """octoDNS's check of ``octodns.healthcheck.protocol``, on any record that sets it."""
    meta = record.get("octodns")
    check = meta.get("healthcheck") if isinstance(meta, Mapping) else None
    if not isinstance(check, Mapping) or "protocol" not in check:
        return True
    return check["protocol"] in OCTODNS_HEALTHCHECK_PROTOCOLS


def provider_only_reasons(origin: str, name: str, record: Mapping[str, Any]) -> list[str]:
    """octoDNS's own reasons to reject a record of a type we do not serve (ALIAS, URLFWD)."""
    data = _plain(record)
    data.setdefault("ttl", DEFAULT_TTL)
    if not OctoRecord.validators.configured:
        # octoDNS's default set, which it would otherwise enable itself, logging that it did.
        OctoRecord.enable_validators({"legacy"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # octoDNS's deprecation notices
            OctoRecord.new(OctoZone(origin, []), name, data)
    except OctoValidationError as exc:
        # A ValidationReason's str() appends ", via: <validator>": keep the bare text.
        return [str.__str__(reason) for reason in exc.reasons]
    except Exception as exc:  # noqa: BLE001 - octoDNS refuses malformed data by raising anything
        return [f"invalid {record.get('type')} record: {exc}"]
    return []


def _plain(data: Any) -> Any:
    # octoDNS expects plain containers, and must not change ours.
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def zone_name_for(path: Path) -> Name:
    """``zones/example.com.yaml`` holds ``example.com.``."""
    stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    return dns.name.from_text(stem.rstrip(".") + ".").canonicalize()


def _check_zone(b: _Builder) -> None:
    checked = set()
    for owner in (*b.kinds.get(CNAME, ()), *b.kinds.get(DS, ())):
        if owner in checked:
            continue
        checked.add(owner)
        types = b.nodes[owner]
        where = b.first[owner]
        subject = _relative(owner, b.origin)
        if CNAME in types:
            if owner == b.origin_wire:
                b.problem(subject, "CNAME not allowed at the zone apex", where)
            elif len(types) > 1:
                b.problem(subject, "CNAME cannot coexist with other records", where)
        if DS in types and (owner == b.origin_wire or NS not in types):
            b.problem(subject, "DS belongs only beside NS at a delegation", where, warning=True)


def _relative(owner: bytes, origin: Name) -> str:
    """The owner's name as written in the zone file ("" at the apex)."""
    name = dns.name.from_wire(owner, 0)[0]
    return name.relativize(origin).to_text() if name != origin else ""


def build_zone(
    path: Path,
    soa_config: SoaConfig,
    previous: Served | None = None,
    text: str | None = None,
) -> tuple[Zone, list[Problem]]:
    """Build one zone from its YAML; raises ConfigError with every reason, returns warnings."""
    origin = zone_name_for(path)
    # Taken before reading: a change made while reading makes the next reload read it again.
    stamp = file_stamp(path, soa_config) if text is None else None
    # libyaml reads the bytes itself: decoding a large file first would hold the interpreter
    # for tens of milliseconds, stalling queries during a reload.
    source = read_bytes(path) if text is None else text
    try:
        b = _read(origin, path, top_level_items(path, source))
    except Unusual:
        # Anchors, tags, several documents, a syntax error...: the whole-file loader, which
        # reads everything PyYAML reads and words its errors.
        data = load_yaml(path, text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                [Problem("a zone file must be a mapping of names", Location(str(path)))]
            ) from None
        where = data.where if isinstance(data, MarkedDict) else lambda _: Location(str(path))
        b = _read(origin, path, ((k, v, where(k)) for k, v in data.items()))
    return _assemble(b, path, soa_config, previous, stamp)


def _read(origin: Name, path: Path, items: Iterable[tuple[Any, Any, Location]]) -> _Builder:
    """Every record of the file, validated, in wire form."""
    b = _Builder(origin, str(path), name_wire(origin))
    top = KeyOrder("")
    nested: list[Problem] = []
    for key, entry, where in items:
        if top.out_of_order(key):
            b.order.append(top.problem(key, where))
        nested_key_order(entry, ("" if key is None else str(key)) or "@", nested)
        b.add_name(key, entry, where)
    b.order[:0] = nested
    _check_zone(b)
    return b


def _assemble(
    b: _Builder, path: Path, soa_config: SoaConfig, previous: Served | None, stamp: Hashable
) -> tuple[Zone, list[Problem]]:
    problems = b.order + b.problems
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
    warnings = [p for p in problems if p.warning]
    origin, apex = b.origin, b.origin_wire
    nodes = b.nodes
    ns_owners = {o for o in b.kinds.get(NS, ()) if o != apex}
    # An NS set below another delegation is itself occluded: only the topmost cut counts.
    cuts = {o for o in ns_owners if not below(o[o[0] + 1 :], ns_owners)}
    glue: dict[bytes, WireNode] = {}
    if cuts:
        ns_targets = {target for owner in b.kinds[NS] for target in rdata_names(nodes[owner][NS])}
        for owner in list(nodes):
            cut = _cut_above(owner, cuts)
            if cut is None:
                continue
            node = nodes[owner]
            kept = {t: e for t, e in node.items() if cut == owner and t in (NS, DS)}
            for rdtype, entry in node.items():
                if rdtype in kept:
                    continue
                if rdtype in (A, AAAA):
                    glue.setdefault(owner, {})[rdtype] = entry
                    if owner in ns_targets:
                        continue  # glue for a delegation: exactly what it is for
                warnings.append(
                    Problem(
                        f"{dns.rdatatype.to_text(_type(rdtype))} is occluded by the delegation at "
                        f"{dns.name.from_wire(cut, 0)[0]}; served only as glue in referrals",
                        b.first[owner],
                        _relative(owner, origin),
                        True,
                    )
                )
            if kept:
                nodes[owner] = kept
            else:
                del nodes[owner]
    if NS not in nodes.get(apex, {}):
        warnings.append(
            Problem("zone has no apex NS records", Location(str(path)), "", warning=True)
        )
    nodes.setdefault(apex, {})
    for owner in list(nodes):
        if owner == apex:
            continue
        # Empty non-terminals exist: NODATA, not NXDOMAIN.
        name = owner[owner[0] + 1 :]
        while name != apex and name not in nodes:
            nodes[name] = {}
            name = name[name[0] + 1 :]

    mname = b.apex_ns[0] if b.apex_ns else origin.to_text()
    digest = _digest(b, soa_config, mname)
    soa = _synthesize_soa(origin, mname, soa_config, path, digest, previous)
    # Occluded data is glue at most: only authoritative names answer dynamically.
    dynamic = {
        (name, rdtype): record
        for (name, rdtype), record in b.dynamic.items()
        if rdtype in nodes.get(name_wire(name), {})
    }
    zone = assemble_zone(
        origin,
        nodes,
        glue,
        soa,
        min(soa.ttl, soa_config.minimum),  # RFC 2308 section 5
        cuts=cuts,
        dnames=set(b.kinds.get(DNAME, ())),
        cnames=b.kinds.get(CNAME, ()),
        dynamic=dynamic,
        digest=digest,
        source=str(path),
        stamp=stamp,
        warnings=tuple(warnings),
    )
    return zone, warnings


def _cut_above(owner: bytes, cuts: set[bytes]) -> bytes | None:
    """The highest delegation at or above ``owner``."""
    found = None
    at = 0
    while owner[at]:
        if owner[at:] in cuts:
            found = owner[at:]
        at += owner[at] + 1
    return found


def _digest(b: _Builder, soa_config: SoaConfig, mname: str) -> str:
    """What the serial follows: the data (value order ignored), GSLB rules and SOA settings."""
    h = hashlib.sha256(f"{soa_config!r} {mname}\n".encode())
    for text in sorted(b.dynamic_text):
        h.update(text.encode() + b"\n")
    h.update((b.digest % (1 << 128)).to_bytes(16, "big"))
    return h.hexdigest()


def _synthesize_soa(
    origin: Name,
    mname: str,
    cfg: SoaConfig,
    path: Path,
    digest: str,
    previous: Served | None,
) -> RRset:
    # The serial grows whenever the content does: the file's mtime, and at least one more than
    # the serial served before if the content changed within the same second.
    try:
        mtime = int(path.stat().st_mtime)
    except OSError:
        mtime = int(time.time())
    serial = mtime & 0xFFFFFFFF
    if previous is not None:
        if previous.digest == digest:
            serial = previous.serial
        elif serial <= previous.serial:
            serial = (previous.serial + 1) & 0xFFFFFFFF
    rname = cfg.rname or f"hostmaster.{origin.to_text()}"
    soa = dns.rrset.from_text(
        origin,
        cfg.ttl,
        "IN",
        "SOA",
        f"{mname} {rname} {serial} {cfg.refresh} {cfg.retry} {cfg.expire} {cfg.minimum}",
    )
    return soa


def zone_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into their ``*.yaml`` files, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            out.append(path)
    return out


def load_zones(
    paths: Iterable[Path],
    soa_config: SoaConfig,
    previous: Mapping[str, Served] | None = None,
    current: ZoneSet | None = None,
) -> tuple[ZoneSet, list[Problem]]:
    """Load every zone; raises ConfigError listing every problem of every file.

    A zone of ``current`` whose file has not changed since it was built (same path, mtime,
    size and inode, same SOA settings) is taken as it is, not read again.
    """
    zones: dict[Name, Zone] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    paths = list(paths)
    files = zone_files(paths)
    for path in [*(p for p in paths if p.is_dir()), *files]:
        if (loose := writable_by_others(path)) is not None:
            warnings.append(loose)
    for path in files:
        try:
            origin = zone_name_for(path)
        except dns.exception.DNSException as exc:
            problems.append(Problem(f"file name is not a zone name: {exc}", Location(str(path))))
            continue
        before = previous.get(origin.to_text()) if previous else None
        zone = current.zones.get(origin) if current is not None else None
        if zone is None or zone.source != str(path) or zone.stamp != file_stamp(path, soa_config):
            try:
                zone, _ = build_zone(path, soa_config, before)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
        if origin in zones:
            problems.append(Problem(f"zone {origin} is defined twice", Location(str(path))))
        zones[origin] = zone
        warnings.extend(zone.warnings)
    if problems:
        raise ConfigError(problems + warnings)
    return ZoneSet(zones), warnings


def file_stamp(path: Path, soa_config: SoaConfig) -> Hashable:
    """What a built zone depends on besides the file's text: None if the file cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, soa_config)
