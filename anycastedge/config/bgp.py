"""pop.yaml ``bgp:``: peers, route attributes, drain, and the health checks behind announcements."""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from anycastedge.config.reader import Reader, parse_hostport
from anycastedge.errors import Location, Problem
from anycastedge.health.check import CheckTarget, HealthCheck

GRACEFUL_SHUTDOWN = "65535:0"  # RFC 8326


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One BGP peer (an upstream router)."""

    address: str
    peer_as: int
    port: int = 179


@dataclass(frozen=True, slots=True)
class RouteAttributes:
    """Attributes sent with an announcement."""

    med: int = 100
    communities: tuple[str, ...] = ()
    prepend: int = 0  # extra copies of the local AS in the AS path


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Timing and rise/fall of the announcement health checks."""

    interval: float = 1.0
    fast_interval: float = 0.2
    rise: int = 3
    fall: int = 2
    timeout: float = 1.0
    checks: tuple[CheckTarget, ...] = ()  # each carries ``timeout`` as its own


@dataclass(frozen=True, slots=True)
class BgpConfig:
    """The ``bgp:`` section of pop.yaml."""

    router_id: str = "127.0.0.2"
    local_as: int = 65011
    local_address: str = "127.0.0.2"
    next_hop: str = "self"
    hold_time: int = 9
    require_local_address: bool = True
    neighbors: tuple[Neighbor, ...] = ()
    up: RouteAttributes = field(default_factory=RouteAttributes)
    drain: RouteAttributes = field(
        default_factory=lambda: RouteAttributes(1000, (GRACEFUL_SHUTDOWN,), 3)
    )
    drain_seconds: float = 30.0
    health: HealthConfig = field(default_factory=HealthConfig)


def _address(value: Any) -> str:
    return str(ipaddress.ip_address(str(value)))


def _asn(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32:
        raise ValueError(f"{value!r} is not an AS number")
    return value


def _communities(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of ASN:VALUE communities")
    out = []
    for item in value:
        high, sep, low = str(item).partition(":")
        if (
            not sep
            or not high.isdigit()
            or not low.isdigit()
            or int(high) > 65535
            or int(low) > 65535
        ):
            raise ValueError(f"{item!r} is not a community ASN:VALUE (16 bits each)")
        out.append(f"{int(high)}:{int(low)}")
    return tuple(out)


def _attributes(r: Reader, default: RouteAttributes) -> RouteAttributes:
    attrs = RouteAttributes(
        med=int(r.number("med", default.med, 0, 2**32 - 1)),
        communities=r.converted("communities", _communities, default.communities),
        prepend=int(r.number("prepend", default.prepend, 0, 16)),
    )
    return attrs


def _check(item: Any, index: int, parent: Reader, timeout: float) -> CheckTarget | None:
    r = Reader(item, f"{parent.path}.checks[{index}]", parent.problems, parent.where)
    kind = r.get("kind", str, "")
    target: CheckTarget | None = None
    if kind == "dns":
        server = r.converted("server", parse_hostport)
        name, qtype = r.get("name", str), r.get("type", str, "SOA").upper()
        if server and name:
            how = HealthCheck("DNS", port=server[1], timeout=timeout, qname=name, qtype=qtype)
            target = CheckTarget(server[0], how)
    elif kind == "http":
        url = r.get("url", str)
        statuses = r.get("expect_status", list, [200])
        parsed = urllib.parse.urlsplit(url or "")
        if url is not None and (parsed.scheme not in ("http", "https") or not parsed.hostname):
            r.error("url", "must be an http:// or https:// URL with a host")
        elif url is not None:
            scheme = parsed.scheme.upper()
            path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
            how = HealthCheck(
                scheme,
                path=path,
                port=parsed.port or (443 if scheme == "HTTPS" else 80),
                timeout=timeout,
                expect_status=frozenset(int(s) for s in statuses or [200]),
                body=r.get("body", str, None),
            )
            target = CheckTarget(parsed.hostname or "", how)
    elif kind == "tcp":
        address = r.converted("address", parse_hostport)
        if address:
            target = CheckTarget(address[0], HealthCheck("TCP", port=address[1], timeout=timeout))
    else:
        r.error("kind", f"must be dns, http or tcp, not {kind!r}")
    r.finish()
    return target


NO_CHECKS = (
    "at least one check is required: without checks the anycast prefixes would be announced "
    "whether or not this POP answers"
)


def read_bgp(r: Reader, where: Location | None = None) -> BgpConfig:
    """Validate the ``bgp:`` mapping, recording every problem in the reader.

    ``where`` is the line of the ``bgp:`` key itself, for problems about keys left out of it.
    """
    d = BgpConfig()
    neighbors = []
    for i, item in enumerate(r.get("neighbors", list, [])):
        nr = Reader(item, f"{r.path}.neighbors[{i}]", r.problems, r.where)
        neighbors.append(
            Neighbor(
                address=nr.converted("address", _address),
                peer_as=nr.converted("peer_as", _asn),
                port=int(nr.number("port", 179, 1, 65535)),
            )
        )
        nr.finish()
    up_r = r.child("up")
    up = _attributes(up_r, d.up)
    up_r.finish()
    drain_r = r.child("drain")
    drain = _attributes(drain_r, d.drain)
    drain_seconds = drain_r.number("seconds", d.drain_seconds, 0, 86400)
    drain_r.finish()
    if GRACEFUL_SHUTDOWN not in drain.communities:
        drain = RouteAttributes(drain.med, drain.communities + (GRACEFUL_SHUTDOWN,), drain.prepend)
    h_r = r.child("health")
    timeout = h_r.number("timeout", d.health.timeout, 0.05, 60)
    check_items = h_r.get("checks", list, [])
    checks = [_check(item, i, h_r, timeout) for i, item in enumerate(check_items or [])]
    if "checks" not in h_r.data or h_r.data["checks"] == []:
        # Fail closed: a hook with nothing to check would vouch for a POP whose DNS is dead.
        # The line is the innermost of checks:, health: and bgp: that was written.
        if "checks" in h_r.data:
            at = h_r.location("checks")
        elif "health" in r.data:
            at = r.location("health")
        else:
            at = where or r.where
        r.problems.append(Problem(f"{h_r.path}.checks: {NO_CHECKS}", at))
    health = HealthConfig(
        interval=h_r.number("interval", d.health.interval, 0.05, 3600),
        fast_interval=h_r.number("fast_interval", d.health.fast_interval, 0.05, 3600),
        rise=int(h_r.number("rise", d.health.rise, 1, 100)),
        fall=int(h_r.number("fall", d.health.fall, 1, 100)),
        timeout=timeout,
        checks=tuple(c for c in checks if c is not None),
    )
    h_r.finish()
    next_hop = r.get("next_hop", str, d.next_hop)
    if next_hop != "self":
        try:
            next_hop = _address(next_hop)
        except ValueError:
            r.error("next_hop", f"must be 'self' or an address, not {next_hop!r}")
    config = BgpConfig(
        router_id=r.converted("router_id", _address, d.router_id),
        local_as=r.converted("local_as", _asn, d.local_as),
        local_address=r.converted("local_address", _address, d.local_address),
        next_hop=next_hop,
        hold_time=int(r.number("hold_time", d.hold_time, 3, 65535)),
        require_local_address=r.get("require_local_address", bool, d.require_local_address),
        neighbors=tuple(neighbors),
        up=up,
        drain=drain,
        drain_seconds=drain_seconds,
        health=health,
    )
    return config
