"""octoDNS ``dynamic`` blocks (GSLB) read into the gslb model, with octoDNS's validation reasons.

The reasons follow octoDNS's own wording (octodns/record/dynamic.py) so that an operator who knows
``octodns-validate`` recognises them; each carries the file:line of the pool, value or rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping
from typing import Any

from dns.name import Name
from dns.rdata import Rdata
from octodns.record.geo import GeoCodes

from anycastedge.config.reader import Reader
from anycastedge.config.records import to_rdata
from anycastedge.config.source import MarkedDict
from anycastedge.errors import Location, Problem
from anycastedge.gslb.model import OBEY, DynamicRecord, Network, Pool, PoolValue, Rule, StickyPrefix
from anycastedge.health.check import CheckTarget, HealthCheck

DYNAMIC_TYPES = frozenset({"A", "AAAA", "CNAME"})
STATUSES = ("up", "down", "obey")
# octoDNS accepts ICMP and UDP too; this server cannot send ICMP, and a UDP check means nothing
# without a payload, so those are refused rather than silently never checked.
CHECK_PROTOCOLS = ("HTTP", "HTTPS", "TCP")
_OCTODNS_CHECK_KEYS = frozenset({"host", "path", "port", "protocol"})

Report = Callable[[str, Location, bool], None]  # message, where, warning


def _where(data: Any, fallback: Location) -> Location:
    return data.location if isinstance(data, MarkedDict) else fallback


def _key_where(data: Any, key: Any, fallback: Location) -> Location:
    return data.where(key) if isinstance(data, MarkedDict) else fallback


def geo_code_problems(code: Any, prefix: str = "") -> list[str]:
    """octoDNS's reasons why ``code`` is not a geo code (``EU``, ``NA-US``, ``NA-US-CA``)."""
    if not isinstance(code, str):
        return [f'{prefix}invalid geo code "{code}"']
    reasons = GeoCodes.validate(code, prefix, validator_id="anycastedge")
    return [getattr(reason, "reason", str(reason)) for reason in reasons]


def read_dynamic(
    record: Mapping[str, Any],
    rdtype: str,
    owner: Name,
    ttl: int,
    values: tuple[Rdata, ...],
    where: Location,
    report: Report,
) -> DynamicRecord | None:
    """The DynamicRecord of ``record`` (it has a ``dynamic`` key), or None after reporting why."""
    counter = _Counter(report)
    report = counter.report
    if rdtype not in DYNAMIC_TYPES:
        report(f"dynamic is supported for A, AAAA and CNAME, not {rdtype}", where, False)
        return None
    if "geo" in record:
        report('"dynamic" record with "geo" content', where, False)
    dynamic = record["dynamic"]
    if not isinstance(dynamic, dict):
        report("dynamic must be a mapping with pools and rules", where, False)
        return None
    for key in dynamic:
        if key not in ("pools", "rules"):
            report(f"unknown key {key!r} in dynamic ignored", _key_where(dynamic, key, where), True)
    here = _where(dynamic, where)
    problems: list[Problem] = []
    ext = Reader(record.get("anycastedge"), "anycastedge", problems, where)
    check, addresses = _read_checks(record, owner, ext.child("healthcheck"), here, report)
    answers, sticky, sticky_prefix = _read_answer_options(ext)
    ext.finish()
    for problem in problems:
        report(problem.message, problem.location or where, problem.warning)
    rdata: dict[str, Rdata] = {r.to_text(): r for r in values}
    pools = _read_pools(dynamic.get("pools"), rdtype, here, report, rdata, check, addresses)
    raw_pools = dynamic.get("pools")
    defined = {str(name) for name in raw_pools} if isinstance(raw_pools, dict) else set()
    rules_at = _key_where(dynamic, "rules", here)
    rules, used = _read_rules(dynamic.get("rules"), defined, rules_at, report)
    fallbacks = {p.fallback for p in pools.values() if p.fallback}
    unused = set(pools) - used - fallbacks
    if unused:
        names = '", "'.join(sorted(unused))
        report(f'unused pools: "{names}"', _key_where(dynamic, "pools", here), False)
    if counter.errors:
        return None
    return DynamicRecord(
        name=owner,
        rdtype=values[0].rdtype,
        ttl=ttl,
        pools=pools,
        rules=tuple(rules),
        values=tuple(r.to_text() for r in values),
        rdata=rdata,
        answers=answers,
        sticky=sticky,
        sticky_prefix=sticky_prefix,
        source=str(where),
        label=f"{owner} {rdtype}",
    )


class _Counter:
    """Counts the errors passed through a Report, to know whether the record stands."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self.errors = 0

    def report(self, message: str, where: Location, warning: bool) -> None:
        self.errors += not warning
        self._report(message, where, warning)


def _read_checks(
    record: Mapping[str, Any], owner: Name, r: Reader, where: Location, report: Report
) -> tuple[HealthCheck, dict[str, str]]:
    meta = record.get("octodns") or {}
    octo = meta.get("healthcheck") if isinstance(meta, dict) else None
    octo = octo if octo is not None else {}
    at = _where(octo, where)
    if not isinstance(octo, dict):
        report("octodns.healthcheck must be a mapping", at, False)
        octo = {}
    for key in octo:
        if key not in _OCTODNS_CHECK_KEYS:
            report(
                f"unknown key octodns.healthcheck.{key} ignored", _key_where(octo, key, at), True
            )
    protocol = octo.get("protocol", "HTTPS")
    if protocol not in CHECK_PROTOCOLS:
        report(
            f'octodns.healthcheck.protocol "{protocol}" is not supported (HTTP, HTTPS or TCP)',
            _key_where(octo, "protocol", at),
            False,
        )
        protocol = "HTTPS"
    port = octo.get("port", 443)
    if isinstance(port, bool) or not isinstance(port, int | str) or not str(port).isdigit():
        report(
            f'octodns.healthcheck.port "{port}" is not a port', _key_where(octo, "port", at), False
        )
        port = 443
    if not 0 < int(port) < 65536:
        report(f"octodns.healthcheck.port {port} out of range", _key_where(octo, "port", at), False)
        port = 443
    host = octo.get("host", owner.to_text(omit_final_dot=True))
    path = octo.get("path", "/_dns")
    if not isinstance(path, str) or not path.startswith("/"):
        report(f'octodns.healthcheck.path "{path}" must start with /', at, False)
        path = "/_dns"
    default = HealthCheck()
    interval = r.number("interval", default.interval, 0.1, 86400)
    timeout = r.number("timeout", default.timeout, 0.05, 3600)
    if timeout >= interval:
        r.error("timeout", f"{timeout:g} must be shorter than the interval {interval:g}")
    check = HealthCheck(
        protocol=str(protocol),
        host=str(host or "") if protocol != "TCP" else "",
        path=path if protocol != "TCP" else "",
        port=int(port),
        interval=interval,
        timeout=timeout,
        rise=int(r.number("rise", default.rise, 1, 100)),
        fall=int(r.number("fall", default.fall, 1, 100)),
        expect_status=r.converted("expect_status", _statuses, default.expect_status),
        body=r.get("body", str, None),
        tls_verify=r.get("tls_verify", bool, default.tls_verify),
    )
    none: dict[str, str] = {}
    addresses = r.converted("addresses", _address_map, none)
    r.finish()
    return check, addresses


def _statuses(value: Any) -> frozenset[int]:
    """``[200, 204, "300-399"]``: single codes and inclusive ranges."""
    items = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        low, sep, high = str(item).partition("-")
        if not low.strip().isdigit() or (sep and not high.strip().isdigit()):
            raise ValueError(f'"{item}" is not a status code or a range like 200-399')
        first, last = int(low), int(high) if sep else int(low)
        if not 100 <= first <= last <= 599:
            raise ValueError(f'"{item}" is outside 100-599')
        out.update(range(first, last + 1))
    if not out:
        raise ValueError("must list at least one status")
    return frozenset(out)


def _address_map(value: Any) -> dict[str, str]:
    """Answered value -> the address to probe instead (a health endpoint on another address)."""
    if not isinstance(value, dict):
        raise ValueError("must map answered values to the addresses to check")
    out = {}
    for answered, checked in value.items():
        try:
            key = str(ipaddress.ip_address(str(answered)))
        except ValueError:
            key = str(answered).lower()  # a CNAME value, written as in the pool
        out[key] = str(ipaddress.ip_address(str(checked)))
    return out


def _read_answer_options(r: Reader) -> tuple[int, bool, StickyPrefix]:
    answers = int(r.number("answers", 1, 1, 64))
    sticky = r.get("sticky", bool, False)
    s = r.child("sticky_prefix")
    default = StickyPrefix()
    prefix = StickyPrefix(
        ipv4=int(s.number("ipv4", default.ipv4, 0, 32)),
        ipv6=int(s.number("ipv6", default.ipv6, 0, 128)),
    )
    s.finish()
    return answers, sticky, prefix


def _read_pools(
    data: Any,
    rdtype: str,
    where: Location,
    report: Report,
    rdata: dict[str, Rdata],
    check: HealthCheck,
    addresses: Mapping[str, str],
) -> dict[str, Pool]:
    if data is None or data == {}:
        report("missing pools", where, False)
        return {}
    if not isinstance(data, dict):
        report("pools must be a dict", where, False)
        return {}
    pools: dict[str, Pool] = {}
    for name in sorted(data, key=str):
        pool = data[name]
        at = _key_where(data, name, where)
        if not isinstance(pool, dict):
            report(f'pool "{name}" must be a dict', at, False)
            continue
        raw_values = pool.get("values")
        if not isinstance(raw_values, list) or not raw_values:
            report(f'pool "{name}" is missing values', at, False)
            continue
        values = []
        for i, item in enumerate(raw_values, 1):
            value = _read_value(item, i, str(name), rdtype, _where(item, at), report, rdata)
            if value is None:
                continue
            if value.status == OBEY:
                value = _with_target(value, rdtype, check, addresses, _where(item, at), report)
            values.append(value)
        if len(raw_values) == 1 and isinstance(raw_values[0], dict):
            if raw_values[0].get("weight", 1) != 1:
                report(f'pool "{name}" has single value with weight!=1', at, False)
        fallback = pool.get("fallback")
        if fallback == "default":
            fallback = None  # octoDNS's spelling of "the record's values"
        if fallback is not None and fallback not in data:
            report(f'undefined fallback "{fallback}" for pool "{name}"', at, False)
        pools[str(name)] = Pool(
            str(name), tuple(values), None if fallback is None else str(fallback)
        )
    for name in pools:
        # As octoDNS words it: the chain up to (not repeating) the first pool seen again.
        nxt = pools[name].fallback
        chain: list[str | None] = [name, nxt]
        while nxt is not None:
            nxt = pools[nxt].fallback if nxt in pools else None
            if nxt in chain:
                loop = " -> ".join(str(c) for c in chain)
                report(f"loop in pool fallbacks: {loop}", _key_where(data, name, where), False)
                break
            chain.append(nxt)
    return pools


def _with_target(
    value: PoolValue,
    rdtype: str,
    check: HealthCheck,
    addresses: Mapping[str, str],
    where: Location,
    report: Report,
) -> PoolValue:
    address = addresses.get(value.value)
    if address is None and rdtype != "CNAME":
        address = value.value
    if address is None:
        # Probing a CNAME target would mean resolving it: the checker follows no names.
        report(
            f"CNAME value {value.value} has no anycastedge.healthcheck.addresses entry: "
            "served as up, unchecked",
            where,
            True,
        )
        return value
    return PoolValue(value.value, value.weight, value.status, CheckTarget(address, check))


def _read_value(
    item: Any,
    number: int,
    pool: str,
    rdtype: str,
    where: Location,
    report: Report,
    rdata: dict[str, Rdata],
) -> PoolValue | None:
    if not isinstance(item, dict) or "value" not in item:
        report(f'missing value in pool "{pool}" value {number}', where, False)
        return None
    ok = True
    weight = item.get("weight", 1)
    try:
        if isinstance(weight, bool):
            raise ValueError(weight)
        weight = int(weight)  # as octoDNS: "5" and 5.0 are 5
    except (TypeError, ValueError, OverflowError):  # OverflowError: YAML's .inf
        weight = 0
    if not 1 <= weight <= 100:
        report(
            f'invalid weight "{item.get("weight")}" in pool "{pool}" value {number}', where, False
        )
        ok = False
    status = item.get("status", OBEY)
    if status not in STATUSES:
        report(f'invalid status "{status}" in pool "{pool}" value {number}', where, False)
        ok = False
    for key in item:
        if key not in ("value", "weight", "status"):
            report(f'unknown key {key!r} in pool "{pool}" value {number} ignored', where, True)
    try:
        parsed = to_rdata(rdtype, item["value"])
    except ValueError as exc:
        report(f'pool "{pool}" value {number}: {exc}', where, False)
        return None
    text = parsed.to_text()
    rdata.setdefault(text, parsed)
    return PoolValue(text, weight, status) if ok else None


def _read_rules(
    data: Any, pools: Collection[str], where: Location, report: Report
) -> tuple[list[Rule], set[str]]:
    if data is None or data == []:
        report("missing rules", where, False)
        return [], set()
    if not isinstance(data, list):
        report("rules must be a list", where, False)
        return [], set()
    rules: list[Rule] = []
    used: set[str] = set()
    subnets_seen: dict[Network, int] = {}
    geos_seen: dict[str, int] = {}
    seen_default = False
    previous: Any = {}
    for number, item in enumerate(data, 1):
        at = _where(item, where)
        if not isinstance(item, dict) or "pool" not in item:
            report(f"rule {number} missing pool", at, False)
            previous = item if isinstance(item, dict) else {}
            continue
        pool = item["pool"]
        subnets = item.get("subnets", [])
        geos = item.get("geos", [])
        for key in item:
            if key not in ("pool", "subnets", "geos"):
                report(f"unknown key {key!r} in rule {number} ignored", at, True)
        if not isinstance(pool, str):
            report(f'rule {number} invalid pool "{pool}"', at, False)
        elif pool not in pools:
            report(f'rule {number} undefined pool "{pool}"', at, False)
        elif pool in used and (subnets or geos):
            report(f'rule {number} invalid, target pool "{pool}" reused', at, False)
        if isinstance(pool, str):
            used.add(pool)
        _check_order(number, subnets, geos, previous, at, report)
        previous = item
        if not (subnets or geos):
            if seen_default:
                report(f"rule {number} duplicate default", at, False)
            seen_default = True
        networks = _rule_subnets(number, subnets, subnets_seen, at, report)
        codes = _rule_geos(number, geos, geos_seen, at, report)
        rules.append(Rule(str(pool), networks, codes))
    last = data[-1] if isinstance(data[-1], dict) else {}
    if last.get("subnets") or last.get("geos"):
        report('final rule has "subnets" and/or "geos" and is not catchall', where, False)
    return rules, used


def _check_order(
    number: int, subnets: Any, geos: Any, previous: Any, at: Location, report: Report
) -> None:
    """octoDNS's order: subnet-only rules, then subnet+geo, then geo-only, then the catch-all."""
    if number == 1:
        return
    previous_subnets = previous.get("subnets", []) if isinstance(previous, dict) else []
    previous_geos = previous.get("geos", []) if isinstance(previous, dict) else []
    if subnets and geos:
        if not previous_subnets and previous_geos:
            report(
                f"rule {number} with subnet(s) and geo(s) should appear before all geo-only rules",
                at,
                False,
            )
    elif subnets and previous_geos:
        report(
            f"rule {number} with only subnet targeting should appear before all geo "
            "targeting rules",
            at,
            False,
        )


def _rule_subnets(
    number: int, subnets: Any, seen: dict[Network, int], at: Location, report: Report
) -> tuple[Network, ...]:
    if not isinstance(subnets, list):
        report(f"rule {number} subnets must be a list", at, False)
        return ()
    networks: list[Network] = []
    for subnet in subnets:
        try:
            networks.append(ipaddress.ip_network(str(subnet)))
        except ValueError:
            report(f'rule {number} invalid subnet "{subnet}"', at, False)
    for network in sorted(networks, key=lambda n: (n.version, n)):
        for other, rule in seen.items():
            if other.version != network.version:
                continue
            if network == other:
                report(
                    f"rule {number} targets subnet {network} which has previously been seen "
                    f"in rule {rule}",
                    at,
                    False,
                )
            elif network.subnet_of(other):  # type: ignore[arg-type]
                report(
                    f"rule {number} targets subnet {network} which is more specific than the "
                    f"previously seen {other} in rule {rule}",
                    at,
                    False,
                )
        seen[network] = number
    return tuple(networks)


def _rule_geos(
    number: int, geos: Any, seen: dict[str, int], at: Location, report: Report
) -> tuple[str, ...]:
    if not isinstance(geos, list):
        report(f"rule {number} geos must be a list", at, False)
        return ()
    codes: list[str] = []
    for geo in sorted(geos, key=str):
        problems = geo_code_problems(geo, f"rule {number} ")
        for problem in problems:
            report(problem, at, False)
        if problems:
            continue
        for other, rule in seen.items():
            if geo == other:
                report(
                    f"rule {number} targets geo {geo} which has previously been seen in rule "
                    f"{rule}",
                    at,
                    False,
                )
            elif geo.startswith(other):
                report(
                    f"rule {number} targets geo {geo} which is more specific than the "
                    f"previously seen {other} in rule {rule}",
                    at,
                    False,
                )
        seen[geo] = number
        codes.append(geo)
    return tuple(codes)
