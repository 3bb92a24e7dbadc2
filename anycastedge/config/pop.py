"""pop.yaml: the per-POP configuration, validated into frozen dataclasses."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import maxminddb

from anycastedge.config.bgp import BgpConfig, read_bgp
from anycastedge.config.dynamic import geo_code_problems
from anycastedge.config.forward import read_forward, read_workers
from anycastedge.config.reader import Reader, parse_hostport
from anycastedge.config.source import load_yaml
from anycastedge.errors import ConfigError, Location, Problem
from anycastedge.forward.model import ForwardConfig

DEFAULT_CONFIG_PATHS = ("/etc/anycastedge/pop.yaml",)
HostPort = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SoaConfig:
    """Timers of the synthesized SOA (RFC 1912 / RIPE-203 style defaults)."""

    ttl: int = 3600
    refresh: int = 7200
    retry: int = 3600
    expire: int = 1209600
    minimum: int = 300
    rname: str | None = None  # default hostmaster.<zone>


@dataclass(frozen=True, slots=True)
class GeoConfig:
    """Where client locations come from (used by GSLB)."""

    mmdb: Path | None = None
    networks: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The authoritative server's sockets, zones and protocol limits."""

    listen: tuple[HostPort, ...] = (("127.0.0.1", 5300),)
    zones: Path = Path("zones")
    max_udp_size: int = 1232
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    cache_size: int = 100_000
    watch_interval: float = 1.0
    nsid: bool = True
    soa: SoaConfig = field(default_factory=SoaConfig)
    geo: GeoConfig = field(default_factory=GeoConfig)
    # GSLB health checks go only to these networks; values elsewhere are served unchecked.
    check_networks: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    workers: int = 1  # processes answering on dns.listen (docs/dns-behaviour.md)


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The loopback-only HTTP endpoint for /metrics, /status and /healthz."""

    listen: HostPort | None = ("127.0.0.1", 9053)


@dataclass(frozen=True, slots=True)
class PopConfig:
    """Everything one POP runs with."""

    pop: str = "anycastedge"
    state_dir: Path = Path("/var/lib/anycastedge")
    anycast: tuple[str, ...] = ()
    dns: DnsConfig = field(default_factory=DnsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    bgp: BgpConfig = field(default_factory=BgpConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    source: Path | None = None


def _listen_list(value: Any) -> tuple[HostPort, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of HOST:PORT")
    return tuple(parse_hostport(str(item)) for item in value)


def parse_loopback(value: Any) -> HostPort | None:
    """``HOST:PORT`` on a loopback address (the control endpoint is local only)."""
    if value is None:
        return None
    host, port = parse_hostport(str(value))
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address (the control endpoint is local only)")
    return host, port


def _prefixes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of prefixes")
    out = []
    for item in value:
        net = ipaddress.ip_network(str(item), strict=True)
        if net.prefixlen != net.max_prefixlen:
            raise ValueError(f"{item} is not a host prefix (/32 or /128)")
        out.append(str(net))
    return tuple(out)


def _networks(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ValueError("must map geo codes to lists of CIDRs")
    out = []
    for code, cidrs in value.items():
        problems = geo_code_problems(code)
        if problems:
            raise ValueError("; ".join(problems))
        if not isinstance(cidrs, list):
            raise ValueError(f"{code}: must be a list of CIDRs")
        out.append((str(code), _cidrs(cidrs)))
    return tuple(out)


def _cidrs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of CIDRs")
    return tuple(str(ipaddress.ip_network(str(c))) for c in value)


def _mmdb(base: Path) -> Any:
    def read(value: Any) -> Path:
        path = base / str(value)
        try:
            maxminddb.open_database(str(path)).close()
        except (OSError, ValueError) as exc:  # InvalidDatabaseError is a RuntimeError
            raise ValueError(f"cannot open MaxMind database {path}: {exc}") from None
        except maxminddb.InvalidDatabaseError as exc:
            raise ValueError(f"{path} is not a MaxMind database: {exc}") from None
        return path

    return read


def _read_dns(r: Reader, base: Path) -> DnsConfig:
    d = DnsConfig()
    soa_default = SoaConfig()
    soa_r = r.child("soa")
    soa = SoaConfig(
        **{
            name: int(soa_r.number(name, getattr(soa_default, name), 0, 2**31 - 1))
            for name in ("ttl", "refresh", "retry", "expire", "minimum")
        },
        rname=soa_r.get("rname", str, None),
    )
    soa_r.finish()
    geo_r = r.child("geo")
    geo = GeoConfig(
        mmdb=geo_r.converted("mmdb", _mmdb(base), None),
        networks=geo_r.converted("networks", _networks, ()),
    )
    geo_r.finish()
    zones = r.get("zones", str, None)
    return DnsConfig(
        listen=r.converted("listen", _listen_list, d.listen),
        zones=(base / zones) if zones else base / d.zones,
        max_udp_size=int(r.number("max_udp_size", d.max_udp_size, 512, 65535)),
        tcp_idle_timeout=r.number("tcp_idle_timeout", d.tcp_idle_timeout, 0.1, 3600),
        tcp_max_connections=int(r.number("tcp_max_connections", d.tcp_max_connections, 1, 10**6)),
        cache_size=int(r.number("cache_size", d.cache_size, 0, 10**8)),
        watch_interval=r.number("watch_interval", d.watch_interval, 0, 3600),
        nsid=r.get("nsid", bool, d.nsid),
        soa=soa,
        geo=geo,
        check_networks=r.converted("check_networks", _cidrs, d.check_networks),
        workers=read_workers(r),
    )


def load_pop(path: Path | str) -> PopConfig:
    """Load and validate pop.yaml; every problem is reported at once with file:line."""
    path = Path(path)
    data = load_yaml(path)
    problems: list[Problem] = []
    base = path.resolve().parent
    r = Reader(data, "", problems, Location(str(path)))
    pop = r.get("pop", str, "")
    if pop is not None and not pop:
        r.error("pop", "is required (names this POP in NSID, id.server, metrics)")
    state_dir = r.get("state_dir", str, None)
    anycast: tuple[str, ...] = r.converted("anycast", _prefixes, ())
    dns_r = r.child("dns")
    dns = _read_dns(dns_r, base)
    dns_r.finish()
    control_r = r.child("control")
    default_control: HostPort | None = ("127.0.0.1", 9053)
    control = ControlConfig(listen=control_r.converted("listen", parse_loopback, default_control))
    control_r.finish()
    # Without a bgp: section this POP does no BGP (the hook refuses to run, render to write);
    # with one, it is validated in full, health checks included.
    bgp = BgpConfig()
    if "bgp" in r.data:
        bgp_r = r.child("bgp")
        bgp = read_bgp(bgp_r, r.location("bgp"))
        bgp_r.finish()
    taken = {(proto, hp): "dns.listen" for hp in dns.listen for proto in ("udp", "tcp")}
    if control.listen is not None:
        taken[("tcp", control.listen)] = "control.listen"
    forward_r = r.child("forward")
    forward = read_forward(forward_r, taken, base)
    forward_r.finish()
    r.finish()
    if problems:
        raise ConfigError(problems)
    return PopConfig(
        pop=pop or "anycastedge",
        state_dir=(base / state_dir) if state_dir else Path("/var/lib/anycastedge"),
        anycast=anycast,
        dns=dns,
        control=control,
        bgp=bgp,
        forward=forward,
        source=path.resolve(),
    )


def default_pop(cwd: Path | None = None) -> PopConfig:
    """The embedded default: zones from ./zones, DNS on 127.0.0.1:5300, control on :9053."""
    base = cwd or Path.cwd()
    return PopConfig(
        pop=os.uname().nodename or "anycastedge",
        state_dir=base / ".anycastedge",
        dns=DnsConfig(zones=base / "zones"),
    )
