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
from anycastedge.dns.rrl import RrlConfig
from anycastedge.errors import ConfigError, Location, Problem
from anycastedge.forward.haproxy_render import Runtime, socket_problem
from anycastedge.forward.model import ForwardConfig

DEFAULT_CONFIG_PATHS = ("/etc/anycastedge/pop.yaml",)
DEFAULT_STATE_DIR = Path("/var/lib/anycastedge")
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
    tcp_max_connections_per_client: int = 20
    tcp_read_timeout: float = 2.0
    tcp_max_queries: int = 10_000  # per connection; 0: no limit
    cache_size: int = 100_000
    watch_interval: float = 1.0
    nsid: bool = True
    soa: SoaConfig = field(default_factory=SoaConfig)
    geo: GeoConfig = field(default_factory=GeoConfig)
    # GSLB health checks go only to these networks; values elsewhere are served unchecked.
    check_networks: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    # Response rate limiting of UDP answers; None: off (docs/dns-behaviour.md).
    rrl: RrlConfig | None = field(default_factory=RrlConfig)
    workers: int = 1  # processes answering on dns.listen (docs/dns-behaviour.md)


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The HTTP endpoint for /metrics, /status and /healthz: loopback only, unless
    ``allow_remote`` says otherwise."""

    listen: HostPort | None = ("127.0.0.1", 9053)
    allow_remote: bool = False


@dataclass(frozen=True, slots=True)
class PopConfig:
    """Everything one POP runs with."""

    pop: str = "anycastedge"
    state_dir: Path = DEFAULT_STATE_DIR
    anycast: tuple[str, ...] = ()
    dns: DnsConfig = field(default_factory=DnsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    bgp: BgpConfig = field(default_factory=BgpConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    source: Path | None = None
    # Who serve runs as once its sockets are bound (started as root); None: "anycastedge" if
    # that user exists, else it stays root and says so.
    user: str | None = None


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
        raise ValueError(
            f"{host} is not a loopback address (the control endpoint is local only; "
            "control.allow_remote: true in pop.yaml opens it)"
        )
    return host, port


def _hostport_or_none(value: Any) -> HostPort | None:
    return None if value is None else parse_hostport(str(value))


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


def _whole(r: Reader, key: str, default: int, low: int, high: int) -> int:
    """A whole number within [low, high]."""
    value = r.number(key, default, low, high)
    if value != int(value):
        r.error(key, f"{value:g} is not a whole number")
        return default
    return int(value)
def _integer(r: Reader, key: str, default: int, low: int, high: int) -> int:
    """An integer within [low, high]."""
    value = r.get(key, int, default)
    if value is None:
        return default
    if not low <= value <= high:
        r.error(key, f"{value} is outside {low}..{high}")
        return default
    return value


# The per-class rates, defaulting to responses_per_second as BIND's do.
_RRL_CLASS_RATES = (
    "nxdomains_per_second",
    "nodata_per_second",
    "referrals_per_second",
    "errors_per_second",
)


def _read_rrl(r: Reader) -> RrlConfig | None:
    """``dns.rrl``: null or ``enabled: false`` turn rate limiting off (the rest is still
    checked); absent, it is on with the defaults."""
    if "rrl" in r.data and r.data["rrl"] is None:
        r.used.add("rrl")
        return None
    rrl_r = r.child("rrl")
    d = RrlConfig()
    enabled = rrl_r.get("enabled", bool, True)
    rate_limit = 10**6
    responses = _integer(rrl_r, "responses_per_second", d.responses_per_second, 0, rate_limit)
    rates = {name: _integer(rrl_r, name, responses, 0, rate_limit) for name in _RRL_CLASS_RATES}
    config = RrlConfig(
        responses_per_second=responses,
        **rates,
        window=_integer(rrl_r, "window", d.window, 1, 3600),
        slip=_integer(rrl_r, "slip", d.slip, 0, 10),
        ipv4_prefix=_integer(rrl_r, "ipv4_prefix", d.ipv4_prefix, 0, 32),
        ipv6_prefix=_integer(rrl_r, "ipv6_prefix", d.ipv6_prefix, 0, 128),
        exempt=rrl_r.converted("exempt", _cidrs, d.exempt),
        log_only=rrl_r.get("log_only", bool, d.log_only),
        max_table_size=_integer(rrl_r, "max_table_size", d.max_table_size, 2, 10**8),
    )
    rrl_r.finish()
    return config if enabled is not False else None


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
        tcp_max_connections_per_client=_whole(
            r, "tcp_max_connections_per_client", d.tcp_max_connections_per_client, 1, 10**6
        ),
        tcp_read_timeout=r.number("tcp_read_timeout", d.tcp_read_timeout, 0.1, 3600),
        tcp_max_queries=_whole(r, "tcp_max_queries", d.tcp_max_queries, 0, 10**9),
        cache_size=int(r.number("cache_size", d.cache_size, 0, 10**8)),
        watch_interval=r.number("watch_interval", d.watch_interval, 0, 3600),
        nsid=r.get("nsid", bool, d.nsid),
        soa=soa,
        geo=geo,
        check_networks=r.converted("check_networks", _cidrs, d.check_networks),
        rrl=_read_rrl(r),
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
    allow_remote = control_r.get("allow_remote", bool, False)
    listen_of = _hostport_or_none if allow_remote else parse_loopback
    control = ControlConfig(
        listen=control_r.converted("listen", listen_of, default_control),
        allow_remote=bool(allow_remote),
    )
    control_r.finish()
    user = r.get("user", str, None)
    if user is not None and not user:
        r.error("user", "must name a user (root to stay root)")
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
    state_path = (base / state_dir) if state_dir else DEFAULT_STATE_DIR
    if forward.engine == "haproxy":
        sockets = socket_problem(forward, Runtime.under(str(state_path)))
        if sockets is not None:
            r.error("state_dir", sockets)
    r.finish()
    if problems:
        raise ConfigError(problems)
    return PopConfig(
        pop=pop or "anycastedge",
        state_dir=state_path,
        anycast=anycast,
        dns=dns,
        control=control,
        bgp=bgp,
        forward=forward,
        source=path.resolve(),
        user=user or None,
    )


def default_pop(cwd: Path | None = None) -> PopConfig:
    """The embedded default: zones from ./zones, DNS on 127.0.0.1:5300, control on :9053."""
    base = cwd or Path.cwd()
    return PopConfig(
        pop=os.uname().nodename or "anycastedge",
        state_dir=base / ".anycastedge",
        dns=DnsConfig(zones=base / "zones"),
    )
