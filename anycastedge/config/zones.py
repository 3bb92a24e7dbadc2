"""Zone files in octoDNS's YamlProvider format, built into validated Zone models."""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from natsort import natsort_keygen
from octodns.record import Record as OctoRecord
from octodns.record import ValidationError as OctoValidationError
from octodns.zone import Zone as OctoZone

from anycastedge.config.dynamic import read_dynamic
from anycastedge.config.pop import SoaConfig
from anycastedge.config.records import (
    CONVERTERS,
    PROVIDER_ONLY_TYPES,
    SINGLE_VALUE_TYPES,
    to_rdata,
)
from anycastedge.config.source import MarkedDict, load_yaml
from anycastedge.dns.zone import Name, RRset, Zone, ZoneSet
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
    problems: list[Problem] = field(default_factory=list)
    rrsets: dict[tuple[Name, int], RRset] = field(default_factory=dict)
    locations: dict[Name, Location] = field(default_factory=dict)
    apex_ns: list[str] = field(default_factory=list)
    dynamic: dict[tuple[Name, int], DynamicRecord] = field(default_factory=dict)
    dynamic_text: list[str] = field(default_factory=list)  # what the serial follows

    def problem(self, subject: str, message: str, where: Location, warning: bool = False) -> None:
        self.problems.append(Problem(message, where, subject or "@", warning))

    def add_name(self, key: Any, entry: Any, where: Location) -> None:
        subject = "" if key is None else str(key)
        if subject == "@":
            self.problem(subject, 'invalid name "@", use "" instead', where)
            return
        try:
            owner = dns.name.from_text(subject, self.origin) if subject else self.origin
            owner = owner.canonicalize()
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

    def add_record(self, subject: str, owner: Name, record: Any, where: Location) -> None:
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
            if key in IGNORED_KEYS:
                self.problem(subject, f"octoDNS key {key!r} ignored", where, warning=True)
            elif key not in RECORD_KEYS:
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
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        rrset.update_ttl(ttl)
        for value in values:
            try:
                rrset.add(to_rdata(rdtype, value))
            except ValueError as exc:
                for reason in getattr(exc, "reasons", None) or (str(exc),):
                    self.problem(subject, reason, where)
                ok = False
        if not ok:
            return
        if (owner, rrset.rdtype) in self.rrsets:
            self.problem(subject, f"more than one {rdtype} record at this name", where)
            return
        if "dynamic" in record:
            dynamic = read_dynamic(
                record,
                rdtype,
                owner,
                ttl,
                tuple(rrset),
                where,
                lambda message, at, warning: self.problem(subject, message, at, warning),
            )
            if dynamic is None:
                return
            self.dynamic[(owner, rrset.rdtype)] = dynamic
            extras = {k: record.get(k) for k in ("dynamic", "anycastedge", "octodns")}
            self.dynamic_text.append(
                f"{dynamic.label} {json.dumps(extras, sort_keys=True, default=str)}"
            )
        elif "anycastedge" in record:
            self.problem(subject, "anycastedge options apply to dynamic records only", where, True)
        self.rrsets[(owner, rrset.rdtype)] = rrset
        self.locations.setdefault(owner, where)
        if rdtype == "NS" and owner == self.origin:
            self.apex_ns.extend(str(v) for v in values)

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
        if (included and PROVIDER_NAME not in included) or PROVIDER_NAME in excluded:
            self.problem(
                subject, f"{rdtype} is not for provider {PROVIDER_NAME!r}, not served", where, True
            )
            return False
        return True


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


_NATURAL = natsort_keygen()  # a pure function: building it costs more than using it


def key_order_warnings(data: Any) -> list[Problem]:
    """A warning for every key, in every mapping, that sorts before a key written above it.

    octoDNS's YamlProvider (``enforce_order: true``, its default) rejects such a file: it wants the
    keys of each mapping in natural sort order (``a2`` before ``a10``), the order natsort's default
    key gives, which is what octoDNS itself sorts with. We serve the file, but warn.
    """
    found: list[Problem] = []
    if isinstance(data, MarkedDict):
        for key, entry in data.items():
            subject = "" if key is None else str(key)
            _check_key_order(entry, subject or "@", found)
        _check_key_order_of(data, "", found)
    return found


def _check_key_order(node: Any, subject: str, found: list[Problem]) -> None:
    if isinstance(node, list):
        for item in node:
            _check_key_order(item, subject, found)
    elif isinstance(node, MarkedDict):
        _check_key_order_of(node, subject, found)
        for value in node.values():
            _check_key_order(value, subject, found)


def _check_key_order_of(mapping: MarkedDict, subject: str, found: list[Problem]) -> None:
    highest: Any = None
    highest_key: Any = None
    for key in mapping:
        try:
            natural = _NATURAL(key)
            if highest is not None and natural < highest_key:
                found.append(
                    Problem(
                        f'keys out of order: "{key}" sorts before "{highest}"; octoDNS would '
                        "reject this file (its YamlProvider enforces key order by default)",
                        mapping.where(key),
                        subject or (str(key) if key is not None else "") or "@",
                        warning=True,
                    )
                )
                continue
        except TypeError:  # keys of types natsort cannot compare: octoDNS fails on them too
            continue
        highest, highest_key = key, natural


def zone_name_for(path: Path) -> Name:
    """``zones/example.com.yaml`` holds ``example.com.``."""
    stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    return dns.name.from_text(stem.rstrip(".") + ".").canonicalize()


def _check_zone(b: _Builder) -> None:
    by_name: dict[Name, set[int]] = {}
    for owner, rdtype in b.rrsets:
        by_name.setdefault(owner, set()).add(rdtype)
    for owner, types in by_name.items():
        where = b.locations[owner]
        subject = owner.relativize(b.origin).to_text() if owner != b.origin else ""
        if dns.rdatatype.CNAME in types:
            if owner == b.origin:
                b.problem(subject, "CNAME not allowed at the zone apex", where)
            elif len(types) > 1:
                b.problem(subject, "CNAME cannot coexist with other records", where)
        if dns.rdatatype.DS in types and (owner == b.origin or dns.rdatatype.NS not in types):
            b.problem(subject, "DS belongs only beside NS at a delegation", where, warning=True)


def _digest(
    rrsets: Iterable[RRset], soa_config: SoaConfig, mname: str, dynamic: Iterable[str]
) -> str:
    """What the serial follows: the data (value order ignored), GSLB rules and SOA settings."""
    h = hashlib.sha256(f"{soa_config!r} {mname}\n".encode())
    for text in sorted(dynamic):
        h.update(text.encode() + b"\n")
    # DNSSEC's canonical name order (labels from the root, case-insensitive), with keys that
    # compare as flat bytes: comparing Name objects, or lists of labels, made this sort a
    # multi-second C call at 1M records (holding the GIL through a reload).
    for rrset in sorted(
        rrsets, key=lambda r: (b"\0".join([x.lower() for x in reversed(r.name.labels)]), r.rdtype)
    ):
        values = sorted(rdata.to_text() for rdata in rrset)
        h.update(f"{rrset.name} {rrset.rdtype} {rrset.ttl} {values}\n".encode())
    return h.hexdigest()


def build_zone(
    path: Path,
    soa_config: SoaConfig,
    previous: Served | None = None,
    text: str | None = None,
) -> tuple[Zone, list[Problem]]:
    """Build one zone from its YAML; raises ConfigError with every reason, returns warnings."""
    origin = zone_name_for(path)
    data = load_yaml(path, text)
    b = _Builder(origin, str(path))
    b.problems.extend(key_order_warnings(data))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("a zone file must be a mapping of names", Location(str(path)))])
    for key, entry in data.items():
        where = data.where(key) if isinstance(data, MarkedDict) else Location(str(path))
        b.add_name(key, entry, where)
    _check_zone(b)
    errors = [p for p in b.problems if not p.warning]
    if errors:
        raise ConfigError(b.problems)
    warnings = [p for p in b.problems if p.warning]

    ns_owners = frozenset(
        owner for owner, rdtype in b.rrsets if rdtype == dns.rdatatype.NS and owner != origin
    )
    # An NS set below another delegation is itself occluded: only the topmost cut counts.
    cuts = frozenset(o for o in ns_owners if _cut_above(o, origin, ns_owners) == o)
    ns_targets = {
        rdata.target.canonicalize()
        for (owner, rdtype), rrset in b.rrsets.items()
        if rdtype == dns.rdatatype.NS
        for rdata in rrset
    }
    nodes: dict[Name, dict[int, RRset]] = {}
    glue: dict[Name, dict[int, RRset]] = {}
    for (owner, rdtype), rrset in b.rrsets.items():
        cut = _cut_above(owner, origin, cuts)
        if cut is None or (cut == owner and rdtype in (dns.rdatatype.NS, dns.rdatatype.DS)):
            nodes.setdefault(owner, {})[rdtype] = rrset
            continue
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            glue.setdefault(owner, {})[rdtype] = rrset
            if owner in ns_targets:
                continue  # glue for a delegation: exactly what it is for
        subject = owner.relativize(origin).to_text()
        type_name = dns.rdatatype.RdataType.make(rdtype).name
        warnings.append(
            Problem(
                f"{type_name} is occluded by the delegation at {cut}; "
                "served only as glue in referrals",
                b.locations[owner],
                subject,
                True,
            )
        )
    if not any(dns.rdatatype.NS == t for (o, t) in b.rrsets if o == origin):
        warnings.append(
            Problem("zone has no apex NS records", Location(str(path)), "", warning=True)
        )
    names: set[Name] = set()
    for owner in list(nodes):
        name = owner
        while name != origin and name not in names:
            names.add(name)
            name = name.parent()
    names.add(origin)

    mname = b.apex_ns[0] if b.apex_ns else origin.to_text()
    digest = _digest(b.rrsets.values(), soa_config, mname, b.dynamic_text)
    soa = _synthesize_soa(origin, mname, soa_config, path, digest, previous)
    nodes.setdefault(origin, {})[dns.rdatatype.SOA] = soa
    # RFC 2308 section 5: negative answers live min(SOA TTL, MINIMUM).
    negative_soa = dns.rrset.RRset(origin, soa.rdclass, soa.rdtype)
    negative_soa.update(soa)
    negative_soa.update_ttl(min(soa.ttl, soa_config.minimum))
    zone = Zone(
        origin=origin,
        nodes=nodes,
        glue=glue,
        names=frozenset(names),
        cuts=cuts,
        soa=soa,
        negative_soa=negative_soa,
        digest=digest,
        # Occluded data is glue at most: only authoritative names answer dynamically.
        dynamic={k: v for k, v in b.dynamic.items() if k[1] in nodes.get(k[0], {})},
        source=str(path),
        loaded_at=time.time(),
    )
    return zone, warnings


def _cut_above(owner: Name, origin: Name, cuts: frozenset[Name]) -> Name | None:
    if not cuts:
        return None
    name = owner
    found = None
    while name != origin:
        if name in cuts:
            found = name
        name = name.parent()
    return found


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
    paths: Iterable[Path], soa_config: SoaConfig, previous: Mapping[str, Served] | None = None
) -> tuple[ZoneSet, list[Problem]]:
    """Load every zone; raises ConfigError listing every problem of every file."""
    zones: dict[Name, Zone] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for path in zone_files(paths):
        try:
            origin = zone_name_for(path)
        except dns.exception.DNSException as exc:
            problems.append(Problem(f"file name is not a zone name: {exc}", Location(str(path))))
            continue
        before = previous.get(origin.to_text()) if previous else None
        try:
            zone, zone_warnings = build_zone(path, soa_config, before)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if origin in zones:
            problems.append(Problem(f"zone {origin} is defined twice", Location(str(path))))
        zones[origin] = zone
        warnings.extend(zone_warnings)
    if problems:
        raise ConfigError(problems + warnings)
    return ZoneSet(zones), warnings
