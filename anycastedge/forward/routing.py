"""HTTP routing: which of a listener's routes a request goes to. Pure: bytes in, a Route out."""

from __future__ import annotations

import ipaddress

from anycastedge.forward.model import Route

CACHE_SIZE = 4096  # distinct Host values remembered per table; clients choose them, so bounded

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# What a host name may hold once lowercased; anything else cannot equal a configured name, and
# letting it through could let "evil/x.example.com" pass as a name below example.com.
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._")
_DIGITS = frozenset(b"0123456789")

HostPattern = tuple[bytes, int | None, bool]  # name (for "*.": the ".suffix"), port, wildcard
Candidates = tuple[tuple[bytes, Route], ...]  # (normalised path prefix, route), in order


def split_target(target: bytes) -> tuple[bytes | None, bytes]:
    """The host of an absolute-form request target (else None) and its path without the query."""
    host: bytes | None = None
    if target[:1] != b"/":
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            return None, target  # asterisk- or authority-form: no path to route on
        end = len(rest)
        for stop in (b"/", b"?", b"#"):
            at = rest.find(stop)
            if 0 <= at < end:
                end = at
        host = rest[:end].rpartition(b"@")[2] or None  # userinfo is never part of the host
        target = rest[end:]
        if target[:1] != b"/":
            target = b"/" + target
    for stop in (b"?", b"#"):
        at = target.find(stop)
        if at >= 0:
            target = target[:at]
    return host, target


def parse_host(host: bytes) -> tuple[bytes, int | None] | None:
    """A Host value as (lowercased name without a trailing dot, port or None); None if invalid.

    IPv6 literals keep their brackets, in compressed form: ``[2001:db8::1]``.
    """
    port: int | None = None
    if host[:1] == b"[":
        end = host.find(b"]")
        if end < 0:
            return None
        try:
            address = ipaddress.IPv6Address(host[1:end].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
        rest = host[end + 1 :]
        if rest:
            if rest[:1] != b":":
                return None
            port = _port(rest[1:])
            if port is None and rest != b":":
                return None
        return b"[" + address.compressed.encode("ascii") + b"]", port
    name, sep, port_text = host.rpartition(b":")
    if not sep:
        name = host
    elif port_text:  # "name:" has an empty port, which RFC 3986 allows and means none
        port = _port(port_text)
        if port is None:
            return None
    name = name.lower()
    if name[-1:] == b".":
        name = name[:-1]
    if not name or not _NAME_BYTES.issuperset(name):
        return None
    return name, port


def _port(text: bytes) -> int | None:
    if not text or len(text) > 5 or not _DIGITS.issuperset(text):
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def normalise_path(path: bytes) -> bytes:
    """The path as routes see it (never what is forwarded): unreserved escapes decoded, dot
    segments removed (RFC 3986 5.2.4) and runs of slashes merged, as nginx does."""
    if path[:1] != b"/":
        path = b"/" + path
    if b"%" in path:
        path = _decode_unreserved(path)
    if b"/." not in path and b"//" not in path:
        return path
    segments = path.split(b"/")[1:]
    out: list[bytes] = []
    for segment in segments:
        if segment == b"..":
            if out:
                out.pop()
        elif segment and segment != b".":
            out.append(segment)
    # A path ending in "/", "/." or "/.." names a directory: keep that trailing slash.
    if out and segments[-1] in (b"", b".", b".."):
        out.append(b"")
    return b"/" + b"/".join(out)


def _decode_unreserved(path: bytes) -> bytes:
    """Escapes of ALPHA DIGIT - . _ ~ decoded; other escapes upper-cased (RFC 3986 6.2.2)."""
    parts = path.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) == 2 and _HEX.issuperset(code):
            byte = int(code, 16)
            if byte in _UNRESERVED:
                out.append(bytes((byte,)) + part[2:])
            else:
                out.append(b"%" + code.upper() + part[2:])
        else:
            out.append(b"%" + part)
    return b"".join(out)


def _pattern(text: str) -> HostPattern | None:
    """A route's host as matched; None for one that cannot match (config validates them)."""
    wildcard = text.startswith("*.")
    try:
        parsed = parse_host(text[2:].encode("ascii") if wildcard else text.encode("ascii"))
    except UnicodeEncodeError:
        return None
    if parsed is None:
        return None
    name, port = parsed
    return (b"." + name if wildcard else name), port, wildcard


class RouteTable:
    """A listener's routes, first match wins, with each Host's candidate routes remembered."""

    __slots__ = ("routes", "_rules", "_default_port", "_hostless", "_cache", "_cache_size")

    def __init__(
        self,
        routes: tuple[Route, ...],
        *,
        default_port: int | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        # default_port is what a Host without a port means (80 for http, 443 for https), so a
        # route on "example.com:443" takes "Host: example.com"; None: only an explicit port does.
        self.routes = routes
        self._default_port = default_port
        self._rules = tuple(
            (
                tuple(p for p in map(_pattern, route.hosts) if p is not None),
                bool(route.hosts),
                normalise_path(route.path_prefix.encode("utf-8")),
                route,
            )
            for route in routes
        )
        self._hostless = tuple(
            (prefix, route) for _, hosted, prefix, route in self._rules if not hosted
        )
        self._cache: dict[bytes, Candidates] = {}
        self._cache_size = max(cache_size, 1)

    def match(self, host: bytes | None, path: bytes) -> Route | None:
        """The first route whose hosts take ``host`` and whose prefix starts ``path`` (the query,
        if any, is ignored); None if none does. A missing or empty host takes host-less routes."""
        if host:
            candidates = self._cache.get(host)
            if candidates is None:
                candidates = self._remember(host)
        else:
            candidates = self._hostless
        if not candidates:
            return None
        first_prefix, first_route = candidates[0]
        if first_prefix == b"/":  # a catch-all first: no need to look at the path at all
            return first_route
        for stop in (b"?", b"#"):
            at = path.find(stop)
            if at >= 0:
                path = path[:at]
        if path[:1] != b"/" or b"%" in path or b"/." in path or b"//" in path:
            path = normalise_path(path)
        for prefix, route in candidates:
            if path.startswith(prefix):
                return route
        return None

    def _remember(self, host: bytes) -> Candidates:
        candidates = self._candidates(parse_host(host))
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]  # the oldest: insertion order
        self._cache[host] = candidates
        return candidates

    def _candidates(self, parsed: tuple[bytes, int | None] | None) -> Candidates:
        if parsed is None:  # an invalid Host matches no name, as a missing one
            return self._hostless
        name, port = parsed
        if port is None:
            port = self._default_port
        out = []
        for patterns, hosted, prefix, route in self._rules:
            if not hosted or any(_host_matches(p, name, port) for p in patterns):
                out.append((prefix, route))
        return tuple(out)


def _host_matches(pattern: HostPattern, name: bytes, port: int | None) -> bool:
    want, want_port, wildcard = pattern
    if want_port is not None and want_port != port:
        return False
    if wildcard:
        return name.endswith(want) and len(name) > len(want)
    return name == want


def route_label(route: Route) -> str:
    """How a route is named in metrics and /status: its hosts and path prefix."""
    return f"{','.join(route.hosts) or '*'}{route.path_prefix}"
