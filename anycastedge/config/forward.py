"""pop.yaml's ``forward:`` section, validated into the forwarding tier's model."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anycastedge.config.reader import Reader, parse_hostport
from anycastedge.errors import Problem
from anycastedge.forward.haproxy_render import unsupported
from anycastedge.forward.model import (
    BALANCE_ALGORITHMS,
    ENGINES,
    HTTP_PROTOCOLS,
    MAGLEV_TABLE_SIZE,
    MAX_WORKERS,
    PROTOCOLS,
    Backend,
    BackendHttp,
    Certificate,
    Ejection,
    Endpoint,
    ForwardConfig,
    HaproxyOptions,
    IPNetwork,
    Listener,
    ListenerHttp,
    ListenerTls,
    Route,
)
from anycastedge.forward.tls import check_certificates
from anycastedge.health.check import HealthCheck

AUTO_WORKERS = "auto"  # one per CPU (os.cpu_count(), at most MAX_WORKERS)
MAX_WEIGHT = 256
TLS_VERSIONS = ("1.2", "1.3")
HostPort = tuple[str, int]
NO_HOSTS: tuple[str, ...] = ()

# Keys only HTTP and HTTPS listeners have.
HTTP_KEYS = (
    "routes",
    "trusted_upstreams",
    "header_timeout",
    "max_header_size",
    "max_headers",
    "max_body",
    "access_log",
    "tls",
)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: what a cookie name is
_HOST_HELP = "letters, digits, hyphens and dots, optionally *. first and :PORT last"


def read_forward(r: Reader, taken: dict[tuple[str, HostPort], str], base: Path) -> ForwardConfig:
    """Validate ``forward:``, recording every problem in the reader.

    ``taken`` maps (transport, (host, port)) already bound by this POP (DNS, control) to what
    binds them: a listener may not bind the same. Relative file names are relative to ``base``.
    """
    engine: str | None = r.get("engine", str, "builtin")
    if engine is not None and engine not in ENGINES:
        r.error("engine", f"must be one of {', '.join(ENGINES)}, not {engine!r}")
        engine = None
    workers = read_workers(r)
    if "haproxy" in r.data and engine != "haproxy":
        r.error("haproxy", "applies to engine: haproxy only")
    haproxy = _haproxy(r.child("haproxy"))
    # Every key of listeners: and backends: is a name, so neither has unknown keys to report.
    backends_r = r.child("backends")
    backends = {
        str(name): _backend(
            str(name),
            Reader(item, f"{backends_r.path}.{name}", r.problems, backends_r.location(str(name))),
            base,
        )
        for name, item in backends_r.data.items()
    }
    listeners_r = r.child("listeners")
    listeners = []
    bound = dict(taken)
    for name, item in listeners_r.data.items():
        lr = Reader(item, f"{listeners_r.path}.{name}", r.problems, listeners_r.location(str(name)))
        listener = _listener(str(name), lr, backends, bound, base)
        if listener is not None:
            listeners.append(listener)
    config = ForwardConfig(
        tuple(listeners),
        tuple(b for b in backends.values() if b is not None),
        workers,
        engine or "builtin",
        haproxy,
    )
    if engine == "haproxy":
        # Said plainly rather than approximated: what HAProxy cannot do as the built-in does.
        for path, message in unsupported(config):
            _error_at(r, path, message)
    return config


def _haproxy(r: Reader) -> HaproxyOptions:
    d = HaproxyOptions()
    binary = r.get("binary", str, d.binary)
    options = HaproxyOptions(
        hard_stop_after=r.number("hard_stop_after", d.hard_stop_after, 1, 86400),
        binary=binary or d.binary,
    )
    r.finish()
    return options


def _error_at(r: Reader, path: tuple[str | int, ...], message: str) -> None:
    """A problem for the key at ``path`` below ``r`` (an int: a list index), located at the
    deepest mapping of the path written in the file."""
    name = r.path + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    reader = r
    for key in path[:-1]:
        if not isinstance(key, str) or not isinstance(reader.data.get(key), dict):
            break
        reader = Reader(reader.data[key], "", [], reader.location(key))
    last = path[-1]
    where = reader.location(last) if isinstance(last, str) else reader.where
    r.problems.append(Problem(f"{name}: {message}", where))


def read_workers(r: Reader) -> int:
    """``workers`` (of ``forward:`` or ``dns:``): 1..MAX_WORKERS, or ``auto`` for one per CPU."""
    value = r.get("workers", (int, str), 1)
    if value == AUTO_WORKERS:
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        if value is not None:  # None: a wrong type, reported by get()
            r.error("workers", f"must be 1..{MAX_WORKERS} or {AUTO_WORKERS}, not {value!r}")
        return 1
    return value


def _listener(
    name: str,
    r: Reader,
    backends: dict[str, Backend | None],
    bound: dict[tuple[str, HostPort], str],
    base: Path,
) -> Listener | None:
    bind = r.converted("bind", parse_hostport)
    protocol: str | None = r.get("protocol", str)
    if protocol is not None and protocol not in PROTOCOLS:
        r.error("protocol", f"must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        protocol = None
    http = protocol in HTTP_PROTOCOLS
    backend_name: str | None = None
    backend = None
    if http:
        if "backend" in r.data:
            r.error("backend", f"{protocol} listeners name their backends in routes:")
            r.used.add("backend")
    else:
        backend_name = r.get("backend", str)
        backend = _known_backend(r, backend_name, backends)
    d = Listener(name, "", 0, "tcp", "")
    idle_default = d.idle_timeout if protocol == "tcp" else 60.0 if http else 30.0
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
        http=_listener_http(r, protocol, backends, base) if http else None,
    )
    if protocol == "udp":
        for key in ("accept_proxy", "connect_timeout"):
            if key in r.data:
                r.error(key, "applies to tcp, http and https listeners only")
        if "connect_attempts" in r.data:
            r.error("connect_attempts", "applies to tcp listeners only")
        if backend is not None and backend.proxy_protocol:
            r.error("backend", f"backend {backend.name!r} sends PROXY headers, which UDP cannot")
        if backend is not None and backend.balance == "least_time":
            r.error("backend", f"backend {backend.name!r} balances by connect time: UDP has none")
    elif protocol is not None and "per_packet" in r.data:
        r.error("per_packet", "applies to udp listeners only")
    if http and "connect_attempts" in r.data:
        # HTTP retries are counted per backend (http.retries), beside its other HTTP options:
        # a second count on the listener could only contradict it.
        r.error("connect_attempts", "applies to tcp listeners only (HTTP retries: the backend's "
                "http.retries)")  # fmt: skip
    if protocol in ("tcp", "udp"):
        for key in HTTP_KEYS:
            if key in r.data:
                r.error(key, "applies to http and https listeners only")
    # Without a valid protocol these keys cannot be judged; that protocol is reported already.
    r.used.update(HTTP_KEYS)
    r.finish()
    if bind is None or protocol is None or (not http and backend_name is None):
        return None
    # HTTP and HTTPS are TCP on the wire: they conflict with a TCP listener on the same port.
    transport = "udp" if protocol == "udp" else "tcp"
    for other in _overlapping(transport, bind):
        if other in bound:
            r.error("bind", f"{listener.bind}/{transport} is already bound by {bound[other]}")
            return None
    bound[(transport, bind)] = f"listener {name!r}"
    return listener


def _known_backend(
    r: Reader, name: str | None, backends: dict[str, Backend | None]
) -> Backend | None:
    """The backend ``name`` (None if it is invalid), else a problem for r's ``backend``."""
    if name is None:
        return None
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none"
        r.error("backend", f"no backend {name!r} (defined: {known})")
        return None
    return backends[name]


def _listener_http(
    r: Reader, protocol: str | None, backends: dict[str, Backend | None], base: Path
) -> ListenerHttp:
    d = ListenerHttp(())
    tls = None
    if protocol == "https":
        if "tls" in r.data:
            tls = _tls(r.child("tls"), base)
        else:
            r.error("tls", "is required for https listeners (the certificates they serve)")
    elif "tls" in r.data:
        r.error("tls", "applies to https listeners only")
    return ListenerHttp(
        routes=_routes(r, backends),
        trusted_upstreams=r.converted("trusted_upstreams", _networks, ()),
        header_timeout=r.number("header_timeout", d.header_timeout, 0.01, 3600),
        max_header_size=int(r.number("max_header_size", d.max_header_size, 1024, 262_144)),
        max_headers=int(r.number("max_headers", d.max_headers, 1, 10_000)),
        max_body=_optional_size(r, "max_body"),
        access_log=r.converted("access_log", _access_log(base), d.access_log),
        tls=tls,
    )


def _routes(r: Reader, backends: dict[str, Backend | None]) -> tuple[Route, ...]:
    items = r.get("routes", list, [])
    if not items and (items is not None or "routes" not in r.data):
        r.error("routes", "at least one route is required")
    routes = []
    for i, item in enumerate(items or []):
        rr = Reader(item, f"{r.path}.routes[{i}]", r.problems, r.location("routes"))
        backend = rr.get("backend", str)
        _known_backend(rr, backend, backends)
        hosts: tuple[str, ...] = ()
        if "host" in rr.data and "hosts" in rr.data:
            rr.error("hosts", "host and hosts are exclusive: one name, or a list of them")
            rr.used.update(("host", "hosts"))
        elif "host" in rr.data:
            host: str | None = rr.converted("host", _route_host, None)
            hosts = (host,) if host else ()
        else:
            hosts = rr.converted("hosts", _host_list(_route_host), NO_HOSTS)
        route = Route(
            backend=backend or "",
            hosts=hosts,
            path_prefix=rr.converted("path_prefix", _path_prefix, "/"),
            max_body=_optional_size(rr, "max_body"),
        )
        rr.finish()
        routes.append(route)
    return tuple(routes)


def _tls(r: Reader, base: Path) -> ListenerTls:
    d = ListenerTls(())
    # An unquoted 1.2 is a YAML float: take it for the string it looks like.
    version: str | float | None = r.get("min_version", (str, float), d.min_version)
    if version is not None and str(version) not in TLS_VERSIONS:
        r.error("min_version", f"must be one of {', '.join(TLS_VERSIONS)}, not {version!r}")
        version = None
    min_version = str(version) if version is not None else d.min_version
    ciphers = r.get("ciphers", str, None)
    if ciphers is not None:
        if min_version == "1.3":
            r.error("ciphers", "sets TLS 1.2 suites, which min_version 1.3 refuses")
        else:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
            except ssl.SSLError:
                r.error("ciphers", f"{ciphers!r} selects no cipher this OpenSSL has")
    items = r.get("certificates", list, [])
    if not items and (items is not None or "certificates" not in r.data):
        r.error("certificates", "at least one certificate is required")
    certificates = []
    served: dict[str, int] = {}
    for i, item in enumerate(items or []):
        cr = Reader(item, f"{r.path}.certificates[{i}]", r.problems, r.location("certificates"))
        cert = cr.converted("cert", _readable_file(base))
        key = cr.converted("key", _readable_file(base))
        hosts = cr.converted("hosts", _host_list(_sni_host), NO_HOSTS)
        for host in hosts:
            if host in served:
                cr.error("hosts", f"{host} is served by certificates[{served[host]}] already")
            served.setdefault(host, i)
        cr.finish()
        certificates.append(Certificate(cert or "", key or "", hosts))
    r.finish()
    tls = ListenerTls(
        certificates=tuple(certificates),
        min_version=min_version,
        ciphers=ciphers if ciphers is not None else d.ciphers,
    )
    if certificates and all(c.cert and c.key for c in certificates):
        # The files exist: load them as serve would (PEM, key matches, names). An expired
        # certificate is not refused: refusing pop.yaml would stop DNS and every listener over
        # one HTTPS listener whose clients will refuse it anyway; serve warns of it.
        for problem in check_certificates(tls, dates=False):
            r.error("certificates", problem)
    return tls


def _overlapping(protocol: str, bind: HostPort) -> list[tuple[str, HostPort]]:
    """The binds that conflict with ``bind``: itself and, on its port, the wildcard address."""
    host, port = bind
    wildcard = "::" if ":" in host else "0.0.0.0"
    return [(protocol, bind), (protocol, (wildcard, port))]


def _backend(name: str, r: Reader, base: Path) -> Backend | None:
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
        # sticky_cookie sits on the backend, not in http:, as balance does: both say which
        # endpoint a client gets. Like http:, it is used by HTTP listeners only.
        http=_backend_http(r.child("http"), r.converted("sticky_cookie", _cookie_name, None), base),
    )
    r.finish()
    return backend if endpoints else None


def _backend_http(r: Reader, sticky_cookie: str | None, base: Path) -> BackendHttp:
    d = BackendHttp()
    tls = r.get("tls", bool, d.tls)
    verify = r.get("verify", bool, d.verify)
    http = BackendHttp(
        tls=bool(tls),
        verify=d.verify if verify is None else verify,
        ca_file=r.converted("ca_file", _optional(_ca_file(base)), None),
        server_name=r.converted("server_name", _optional(_server_name), None),
        sticky_cookie=sticky_cookie,
        pool_size=int(r.number("pool_size", d.pool_size, 0, 10_000)),
        pool_idle_timeout=r.number("pool_idle_timeout", d.pool_idle_timeout, 0.01, 3600),
        max_connections=int(r.number("max_connections", d.max_connections, 0, 10**6)),
        retries=int(r.number("retries", d.retries, 0, 10)),
        response_timeout=r.number("response_timeout", d.response_timeout, 0.01, 86400),
    )
    if not http.tls:
        for key in ("verify", "ca_file", "server_name"):
            if key in r.data:
                r.error(key, "applies with tls: true only")
    elif not http.verify and http.ca_file is not None:
        r.error("ca_file", "applies with verify: true only")
    if "sticky_cookie" in r.data:
        r.error("sticky_cookie", "goes on the backend itself, beside http:")
        r.used.add("sticky_cookie")
    r.finish()
    return http


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
        consecutive_5xx=int(r.number("consecutive_5xx", d.consecutive_5xx, 0, 1000)),
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


def _optional_size(r: Reader, key: str) -> int | None:
    """A byte count, or None (``null`` or absent) for no limit."""
    if r.data.get(key) is None:
        r.used.add(key)
        return None
    value = r.get(key, int, None)
    if value is not None and value < 0:
        r.error(key, f"must be a number of bytes (0 or more), not {value}")
        return None
    return value


def _optional(convert: Callable[[Any], str]) -> Callable[[Any], str | None]:
    return lambda value: None if value is None else convert(value)


def _readable_file(base: Path) -> Callable[[Any], str]:
    """A converter to the file's path (relative to ``base``), which must exist and be readable.

    Only that: what is in it is for whoever loads it (TLS) to judge.
    """

    def read(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a file name, not {value!r}")
        path = base / value
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        if not path.is_file():
            raise ValueError(f"{path}: not a file")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{path}: not readable")
        return str(path)

    return read


def _ca_file(base: Path) -> Callable[[Any], str]:
    """A converter to a readable file of PEM CA certificates (at least one)."""
    readable = _readable_file(base)

    def read(value: Any) -> str:
        path = readable(value)
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"{path}: no CA certificate in it ({exc})") from None
        return path

    return read


def _access_log(base: Path) -> Callable[[Any], str | None]:
    def read(value: Any) -> str | None:
        if value is None or value is False:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f'must be a file name, "-" (standard output) or null, not {value!r}')
        return value if value == "-" else str(base / value)

    return read


def _path_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must start with /, not {value!r}")
    if any(c in value for c in "?# ") or not value.isprintable() or not value.isascii():
        raise ValueError(f"{value!r} is not a path (no query, fragment, space or non-ASCII)")
    if any(segment in (".", "..") for segment in value.split("/")):
        raise ValueError(f"{value!r} has . or .. segments, which requests are matched without")
    return value


def _host_list(convert: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    def read(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty list of host names")
        hosts = [convert(item) for item in value]
        for i, host in enumerate(hosts):
            if host in hosts[:i]:
                raise ValueError(f"{host} is listed twice")
        return tuple(hosts)

    return read


def _host_name(value: Any, *, port: bool, wildcard: bool) -> str:
    """A host name as requests are matched against it: lowercased, IDNA A-labels, no trailing
    dot; with ``wildcard`` a leading "*.", with ``port`` a ":PORT"; IPv6 literals in brackets."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a host name, not {value!r}")
    text = value.lower()
    suffix = ""
    if text.startswith("["):
        literal, sep, rest = text[1:].partition("]")
        try:
            name = f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv6 address in brackets") from None
    else:
        name, sep, rest = text.rpartition(":")
        if not sep:
            name, rest = text, ""
        if name.startswith("*."):
            if not wildcard:
                raise ValueError(f"{value!r}: a wildcard does not apply here")
            suffix, name = "*.", name[2:]
        name = name.removesuffix(".")
        if not name.isascii():
            try:
                name = name.encode("idna").decode("ascii")
            except UnicodeError:
                raise ValueError(f"{value!r} is not an internationalised domain name") from None
        if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
            raise ValueError(f"{value!r} is not a host name ({_HOST_HELP})")
    if rest:
        if not port:
            raise ValueError(f"{value!r}: a port does not apply here")
        if not rest.startswith(":") and text.startswith("["):
            raise ValueError(f"{value!r} is not a host name ({_HOST_HELP})")
        number = rest.removeprefix(":") if text.startswith("[") else rest
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ValueError(f"{value!r}: {number!r} is not a port number")
        return f"{suffix}{name}:{int(number)}"
    return f"{suffix}{name}"


def _route_host(value: Any) -> str:
    return _host_name(value, port=True, wildcard=True)


def _sni_host(value: Any) -> str:
    return _host_name(value, port=False, wildcard=True)


def _server_name(value: Any) -> str:
    return _host_name(value, port=False, wildcard=False)


def _cookie_name(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not a cookie name (an RFC 6265 token)")
    return value


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % f for f in range(3, int(n**0.5) + 1, 2))
