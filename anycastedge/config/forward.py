"""pop.yaml's ``forward:`` section, validated into the forwarding tier's model."""

from __future__ import annotations

import ipaddress
from typing import Any

from anycastedge.config.reader import Reader, parse_hostport
from anycastedge.forward.model import (
    BALANCE_ALGORITHMS,
    MAGLEV_TABLE_SIZE,
    PROTOCOLS,
    Backend,
    Ejection,
    Endpoint,
    ForwardConfig,
    IPNetwork,
    Listener,
)
from anycastedge.health.check import HealthCheck

ENGINES = ("builtin",)
MAX_WEIGHT = 256
HostPort = tuple[str, int]


def read_forward(r: Reader, taken: dict[tuple[str, HostPort], str]) -> ForwardConfig:
    """Validate ``forward:``, recording every problem in the reader.

    ``taken`` maps (protocol, (host, port)) already bound by this POP (DNS, control) to what
    binds them: a listener may not bind the same.
    """
    engine = r.get("engine", str, "builtin")
    if engine is not None and engine not in ENGINES:
        r.error("engine", f"must be one of {', '.join(ENGINES)}, not {engine!r}")
    # Every key of listeners: and backends: is a name, so neither has unknown keys to report.
    backends_r = r.child("backends")
    backends = {
        str(name): _backend(
            str(name),
            Reader(item, f"{backends_r.path}.{name}", r.problems, backends_r.location(str(name))),
        )
        for name, item in backends_r.data.items()
    }
    listeners_r = r.child("listeners")
    listeners = []
    bound = dict(taken)
    for name, item in listeners_r.data.items():
        lr = Reader(item, f"{listeners_r.path}.{name}", r.problems, listeners_r.location(str(name)))
        listener = _listener(str(name), lr, backends, bound)
        if listener is not None:
            listeners.append(listener)
    return ForwardConfig(tuple(listeners), tuple(b for b in backends.values() if b is not None))


def _listener(
    name: str,
    r: Reader,
    backends: dict[str, Backend | None],
    bound: dict[tuple[str, HostPort], str],
) -> Listener | None:
    bind = r.converted("bind", parse_hostport)
    protocol: str | None = r.get("protocol", str)
    backend_name = r.get("backend", str)
    if protocol is not None and protocol not in PROTOCOLS:
        hint = " (http listeners come with the L7 tier)" if protocol == "http" else ""
        r.error("protocol", f"must be one of {', '.join(PROTOCOLS)}, not {protocol!r}{hint}")
        protocol = None
    backend = None
    if backend_name is not None:
        if backend_name not in backends:
            known = ", ".join(sorted(backends)) or "none"
            r.error("backend", f"no backend {backend_name!r} (defined: {known})")
        else:
            backend = backends[backend_name]
    tcp = protocol == "tcp"
    d = Listener(name, "", 0, "tcp", "")
    idle_default = d.idle_timeout if tcp else 30.0
    listener = Listener(
        name=name,
        host=bind[0] if bind else "",
        port=bind[1] if bind else 0,
        protocol=protocol or "tcp",
        backend=backend_name or "",
        max_connections=int(r.number("max_connections", d.max_connections, 1, 10**6)),
        connect_timeout=r.number("connect_timeout", d.connect_timeout, 0.01, 3600),
        idle_timeout=r.number("idle_timeout", idle_default, 0.01, 86400),
        connect_attempts=int(r.number("connect_attempts", d.connect_attempts, 1, 100)),
        accept_proxy=r.converted("accept_proxy", _networks, ()),
        per_packet=r.get("per_packet", bool, False),
    )
    if protocol == "udp":
        for key in ("accept_proxy", "connect_timeout", "connect_attempts"):
            if key in r.data:
                r.error(key, "applies to tcp listeners only")
        if backend is not None and backend.proxy_protocol:
            r.error("backend", f"backend {backend.name!r} sends PROXY headers, which UDP cannot")
        if backend is not None and backend.balance == "least_time":
            r.error("backend", f"backend {backend.name!r} balances by connect time: UDP has none")
    elif protocol == "tcp" and "per_packet" in r.data:
        r.error("per_packet", "applies to udp listeners only")
    r.finish()
    if bind is None or protocol is None or backend_name is None:
        return None
    for other in _overlapping(protocol, bind):
        if other in bound:
            r.error("bind", f"{listener.bind}/{protocol} is already bound by {bound[other]}")
            return None
    bound[(protocol, bind)] = f"listener {name!r}"
    return listener


def _overlapping(protocol: str, bind: HostPort) -> list[tuple[str, HostPort]]:
    """The binds that conflict with ``bind``: itself and, on its port, the wildcard address."""
    host, port = bind
    wildcard = "::" if ":" in host else "0.0.0.0"
    return [(protocol, bind), (protocol, (wildcard, port))]


def _backend(name: str, r: Reader) -> Backend | None:
    d = Backend(name, ())
    balance = r.get("balance", str, d.balance)
    if balance is not None and balance not in BALANCE_ALGORITHMS:
        r.error("balance", f"must be one of {', '.join(BALANCE_ALGORITHMS)}, not {balance!r}")
    endpoints = []
    seen: set[HostPort] = set()
    items = r.get("endpoints", list, [])
    if not items:
        r.error("endpoints", "at least one endpoint is required")
    for i, item in enumerate(items or []):
        er = Reader(item, f"{r.path}.endpoints[{i}]", r.problems, r.location("endpoints"))
        address = er.converted("address", parse_hostport)
        weight = int(er.number("weight", 1, 0, MAX_WEIGHT))
        er.finish()
        if address is None:
            continue
        if address in seen:
            er.error("address", f"{Endpoint(*address)} is listed twice")
            continue
        seen.add(address)
        endpoints.append(Endpoint(address[0], address[1], weight))
    if endpoints and not any(e.weight for e in endpoints):
        r.error("endpoints", "every endpoint has weight 0: nothing could take traffic")
    check, check_port = _healthcheck(r.child("healthcheck"), d.healthcheck)
    ejection = _ejection(r.child("ejection"))
    proxy = r.get("proxy_protocol", (str, type(None)), None)
    if proxy not in (None, "v1", "v2"):
        r.error("proxy_protocol", f"must be v1, v2 or null, not {proxy!r}")
        proxy = None
    table = int(r.number("maglev_table_size", MAGLEV_TABLE_SIZE, 7, 10_000_019))
    if "maglev_table_size" in r.data:
        if balance != "maglev":
            r.error("maglev_table_size", "applies to balance: maglev only")
        elif not _is_prime(table):
            r.error("maglev_table_size", f"{table} is not a prime (Maglev's table must be)")
        elif table < 100 * len(endpoints):
            r.error("maglev_table_size", f"{table} is below 100 slots per endpoint")
    backend = Backend(
        name=name,
        endpoints=tuple(endpoints),
        balance=balance or d.balance,
        healthcheck=check,
        check_port=check_port,
        ejection=ejection,
        slow_start=r.number("slow_start", 0.0, 0, 3600),
        proxy_protocol=int(proxy[1]) if proxy else 0,
        critical=r.get("critical", bool, False),
        maglev_table_size=table,
    )
    r.finish()
    return backend if endpoints else None


def _healthcheck(r: Reader, default: HealthCheck) -> tuple[HealthCheck, int | None]:
    """The backend's active check: a TCP connect unless said otherwise. There is no way to turn
    it off: an endpoint that is not checked could not be known to be up (fail closed)."""
    kind = r.get("kind", str, "tcp")
    if kind not in ("tcp", "http"):
        r.error("kind", f"must be tcp or http, not {kind!r}")
        kind = "tcp"
    port = r.converted("port", _port, None)
    interval = r.number("interval", default.interval, 0.1, 3600)
    check = HealthCheck(
        protocol=kind.upper(),
        interval=interval,
        timeout=r.number("timeout", min(default.timeout, interval), 0.01, 3600),
        rise=int(r.number("rise", 2, 1, 100)),
        fall=int(r.number("fall", 3, 1, 100)),
    )
    if kind == "http":
        path = r.get("path", str, "/")
        if path is not None and not path.startswith("/"):
            r.error("path", f"must start with /, not {path!r}")
        statuses = r.converted("expect_status", _statuses, frozenset({200}))
        check = HealthCheck(
            protocol="HTTP",
            host=r.get("host", str, "") or "",
            path=path or "/",
            interval=check.interval,
            timeout=check.timeout,
            rise=check.rise,
            fall=check.fall,
            expect_status=statuses,
            body=r.get("body", str, None),
        )
    else:
        for key in ("path", "host", "expect_status", "body"):
            if key in r.data:
                r.error(key, "applies to kind: http only")
                r.used.add(key)
    if check.timeout > check.interval:
        r.error(
            "timeout", f"{check.timeout:g} s is longer than the interval ({check.interval:g} s)"
        )
    r.finish()
    return check, port


def _ejection(r: Reader) -> Ejection:
    d = Ejection()
    base = r.number("base_time", d.base_time, 0.1, 86400)
    ejection = Ejection(
        consecutive_failures=int(r.number("consecutive_failures", d.consecutive_failures, 0, 1000)),
        base_time=base,
        max_time=r.number("max_time", max(d.max_time, base), 0.1, 86400),
        max_percent=int(r.number("max_percent", d.max_percent, 0, 100)),
    )
    if ejection.max_time < ejection.base_time:
        r.error("max_time", f"{ejection.max_time:g} s is shorter than base_time")
    r.finish()
    return ejection


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"must be a port number, not {value!r}")
    return value


def _statuses(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of HTTP status codes")
    out = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise ValueError(f"{item!r} is not an HTTP status code")
        out.add(item)
    return frozenset(out)


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of CIDRs")
    return tuple(ipaddress.ip_network(str(item), strict=True) for item in value)


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % f for f in range(3, int(n**0.5) + 1, 2))
