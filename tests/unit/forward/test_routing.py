"""HTTP routing: first match wins, host and path matching, normalised paths, request targets."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.forward.model import Route
from anycastedge.forward.routing import (
    RouteTable,
    normalise_path,
    parse_host,
    split_target,
)

API = Route("api", ("api.example.com",), "/v1/")
ADMIN = Route("admin", (), "/admin/")
WILD = Route("web", ("*.example.com", "example.com:8080"))
ANY = Route("any")
V6 = Route("v6", ("[2001:db8::1]:8080",))


# -- examples ----------------------------------------------------------------------------------


def test_the_first_matching_route_wins() -> None:
    table = RouteTable((API, V6, WILD, ADMIN, ANY))
    assert table.match(b"api.example.com", b"/v1/users") is API
    assert table.match(b"api.example.com", b"/v2/users") is WILD  # *.example.com, any port
    assert table.match(b"www.example.com:8443", b"/") is WILD
    assert table.match(b"example.com:8080", b"/") is WILD
    assert table.match(b"example.com", b"/admin/x") is ADMIN  # not *.example.com, nor :8080
    assert table.match(b"example.com:8081", b"/") is ANY
    assert table.match(b"other.test", b"/x") is ANY


def test_host_matching_ignores_case_a_trailing_dot_and_the_port_unless_one_is_given() -> None:
    table = RouteTable((API, Route("port", ("example.com:8080",)), Route("name", ("example.com",))))
    for host in (b"API.Example.COM", b"api.example.com.", b"api.example.com:1234"):
        assert table.match(host, b"/v1/") is API
    assert table.match(b"Example.Com.:8080", b"/") is table.routes[1]
    assert table.match(b"example.com:8081", b"/").backend == "name"  # type: ignore[union-attr]
    assert table.match(b"example.com", b"/").backend == "name"  # type: ignore[union-attr]


def test_a_wildcard_matches_names_below_not_the_name_itself() -> None:
    table = RouteTable((Route("wild", ("*.example.com",)),))
    assert table.match(b"a.example.com", b"/") is not None
    assert table.match(b"a.b.example.com", b"/") is not None
    assert table.match(b"example.com", b"/") is None
    assert table.match(b"badexample.com", b"/") is None
    assert table.match(b".example.com", b"/") is None


def test_ipv6_literal_hosts_parse_and_compare_compressed() -> None:
    table = RouteTable((V6, Route("v6any", ("[2001:db8::2]",))))
    assert table.match(b"[2001:DB8:0::1]:8080", b"/") is V6
    assert table.match(b"[2001:db8::1]", b"/") is None  # no port: not :8080
    assert table.match(b"[2001:db8::2]:9", b"/") is table.routes[1]
    assert parse_host(b"[2001:db8::1]:8080") == (b"[2001:db8::1]", 8080)
    assert parse_host(b"[2001:db8::1]") == (b"[2001:db8::1]", None)
    assert parse_host(b"[::1") is None
    assert parse_host(b"[::1]x") is None


def test_a_missing_or_invalid_host_matches_only_host_less_routes() -> None:
    table = RouteTable((API, ADMIN, ANY))
    assert table.match(None, b"/v1/") is ANY
    assert table.match(b"", b"/admin/") is ADMIN
    assert table.match(b"exa mple.com", b"/v1/") is ANY
    assert table.match(b"api.example.com:0", b"/v1/") is ANY  # port 0: invalid
    assert table.match(b"api.example.com:http", b"/v1/") is ANY
    assert RouteTable((API,)).match(None, b"/v1/") is None


def test_the_default_port_is_what_a_host_without_one_means() -> None:
    route = Route("tls", ("example.com:443",))
    assert RouteTable((route,), default_port=443).match(b"example.com", b"/") is route
    assert RouteTable((route,), default_port=80).match(b"example.com", b"/") is None
    assert RouteTable((route,)).match(b"example.com", b"/") is None
    assert RouteTable((route,)).match(b"example.com:443", b"/") is route


def test_dot_segments_and_escapes_cannot_dodge_a_route() -> None:
    table = RouteTable((ADMIN, API, Route("rest", (), "/")))
    for path in (
        b"/v1/../admin/x",
        b"/v1/%2e%2e/admin/x",
        b"/v1/%2E./admin/",
        b"/./admin/",
        b"//admin//x",
        b"/%61dmin/",
        b"/admin/./",
        b"/x/y/../../admin/",
        b"/../../admin/",
    ):
        assert table.match(b"api.example.com", path) is ADMIN, path
    # An encoded slash is no separator: this is one segment, which ".." removes with the rest.
    assert table.match(b"api.example.com", b"/v1/x%2F..%2Fadmin/") is API
    assert table.match(b"api.example.com", b"/admin") is table.routes[2]  # "/admin/" is the prefix


def test_the_query_and_fragment_are_not_matched() -> None:
    table = RouteTable((ADMIN, ANY))
    assert table.match(None, b"/admin/?x=1") is ADMIN
    assert table.match(None, b"/?next=/admin/") is ANY
    assert table.match(None, b"/admin/#top") is ADMIN


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        (b"/", b"/"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a/b/..", b"/a/"),
        (b"/a/b/.", b"/a/b/"),
        (b"/a/./b/", b"/a/b/"),
        (b"/..", b"/"),
        (b"/a/..", b"/"),
        (b"/a//b///c", b"/a/b/c"),
        (b"/.../a", b"/.../a"),
        (b"/.a/..b", b"/.a/..b"),
        (b"/%7euser/%41%2fb%2F", b"/~user/A%2Fb%2F"),
        (b"/%zz/%4", b"/%zz/%4"),
        (b"/%25%2e", b"/%25."),
        (b"*", b"/*"),
        (b"", b"/"),
    ],
)
def test_normalise_path(path: bytes, normalised: bytes) -> None:
    assert normalise_path(path) == normalised


def test_route_prefixes_are_normalised_as_paths_are() -> None:
    tilde = Route("tilde", (), "/%7Euser/")
    table = RouteTable((tilde,))
    assert table.match(None, b"/~user/x") is tilde
    assert table.match(None, b"/%7euser/x") is tilde


@pytest.mark.parametrize(
    ("target", "split"),
    [
        (b"/a/b?c=d", (None, b"/a/b")),
        (b"/a#f", (None, b"/a")),
        (b"http://Example.com:8080/a/b?c", (b"Example.com:8080", b"/a/b")),
        (b"HTTPS://example.com", (b"example.com", b"/")),
        (b"http://example.com?q=/x", (b"example.com", b"/")),
        (b"http://user:pw@example.com/a", (b"example.com", b"/a")),
        (b"http://[2001:db8::1]:80/a", (b"[2001:db8::1]:80", b"/a")),
        (b"http:///a", (None, b"/a")),
        (b"*", (None, b"*")),
        (b"example.com:443", (None, b"example.com:443")),
        (b"ftp://example.com/a", (None, b"ftp://example.com/a")),
    ],
)
def test_split_target(target: bytes, split: tuple[bytes | None, bytes]) -> None:
    assert split_target(target) == split


def test_the_host_cache_is_bounded_and_eviction_changes_no_answer() -> None:
    table = RouteTable((API, WILD, ANY), cache_size=8)
    fresh = RouteTable((API, WILD, ANY), cache_size=8)
    for i in range(100):
        host = f"h{i}.example.com".encode()
        assert table.match(host, b"/") is WILD
        assert len(table._cache) <= 8
    for host in (b"h1.example.com", b"api.example.com", b"x.test"):
        assert table.match(host, b"/v1/") is fresh.match(host, b"/v1/")


# -- properties --------------------------------------------------------------------------------

LABELS = st.sampled_from(["a", "b", "example", "com", "x-y", "1"])
NAMES = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
PORTS = st.sampled_from([80, 443, 8080, 9999])
PATTERNS = st.builds(
    lambda star, name, port: ("*." if star else "") + name + (f":{port}" if port else ""),
    st.booleans(),
    NAMES,
    st.none() | PORTS,
)
PREFIXES = st.sampled_from(["/", "/a/", "/a", "/b/c", "/a/b/", "/%61/", "/~x"])
ROUTES = st.lists(
    st.builds(
        Route,
        backend=st.sampled_from(["b0", "b1", "b2"]),
        hosts=st.lists(PATTERNS, max_size=2).map(tuple),
        path_prefix=PREFIXES,
    ),
    min_size=1,
    max_size=6,
).map(tuple)
SEGMENTS = st.sampled_from(["a", "b", "c", "x", ".", "..", "", "%61", "%2e", "%2E%2e", "%2F", "~x"])
PATHS = st.lists(SEGMENTS, max_size=6).map(lambda s: ("/" + "/".join(s)).encode())
HOSTS = st.none() | st.builds(
    lambda name, upper, dot, port: (
        (name.upper() if upper else name) + ("." if dot else "") + (f":{port}" if port else "")
    ).encode(),
    NAMES,
    st.booleans(),
    st.booleans(),
    st.none() | PORTS,
)


def ref_normalise(path: bytes) -> bytes:
    """RFC 3986 5.2.4's remove_dot_segments, as written there, after decoding unreserved escapes
    and merging slashes: built differently from normalise_path, to check it."""

    def decode(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if re.fullmatch(r"[A-Za-z0-9._~-]", char) else "%" + m.group(1).upper()

    text = re.sub(r"%([0-9A-Fa-f]{2})", decode, path.decode("latin-1"))
    text = re.sub("/+", "/", text if text.startswith("/") else "/" + text)
    out = ""
    while text:
        if text.startswith("/./") or text == "/.":
            text = "/" + text[3:]
        elif text.startswith("/../") or text == "/..":
            text = "/" + text[4:]
            out = out[: out.rfind("/")] if "/" in out else ""
        else:
            end = text.find("/", 1)
            end = len(text) if end < 0 else end
            out, text = out + text[:end], text[end:]
    return out.encode("latin-1")


def ref_split(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        return f"[{ipaddress.IPv6Address(inside).compressed}]", int(rest[1:]) if rest else None
    name, _, port = text.partition(":")
    return name, int(port) if port else None


def ref_match(routes: tuple[Route, ...], host: bytes | None, path: bytes) -> Route | None:
    """The naive way: every route, in order, every time."""
    name: str | None = None
    port: int | None = None
    if host:
        name, port = ref_split(host.decode().lower())
        name = name.removesuffix(".")
    for route in routes:
        if route.hosts:
            if name is None:
                continue
            ok = False
            for pattern in route.hosts:
                want, want_port = ref_split(pattern)
                if want_port is not None and want_port != port:
                    continue
                if want.startswith("*."):
                    ok = ok or (name.endswith(want[1:]) and name != want[2:])
                else:
                    ok = ok or name == want
            if not ok:
                continue
        if ref_normalise(path).startswith(ref_normalise(route.path_prefix.encode())):
            return route
    return None


@given(st.binary(max_size=40) | PATHS)
def test_a_normalised_path_has_no_dot_segments_and_no_empty_ones(path: bytes) -> None:
    normalised = normalise_path(path)
    assert normalised.startswith(b"/")
    for bad in (b"/./", b"/../", b"//"):
        assert bad not in normalised
    assert not normalised.endswith((b"/.", b"/.."))


@given(PATHS)
def test_normalise_path_is_remove_dot_segments(path: bytes) -> None:
    assert normalise_path(path) == ref_normalise(path)


@given(st.text("abc/.%~", max_size=20).map(str.encode))
def test_a_path_without_escapes_dots_or_double_slashes_is_left_alone(path: bytes) -> None:
    path = b"/" + path
    if b"%" not in path and b"/." not in path and b"//" not in path:
        assert normalise_path(path) == path


@given(ROUTES, st.lists(st.tuples(HOSTS, PATHS), min_size=1, max_size=8))
def test_the_match_is_the_first_route_a_naive_search_picks(
    routes: tuple[Route, ...], requests: list[tuple[bytes | None, bytes]]
) -> None:
    # cache_size=2: requests evict each other, which must change no answer
    table = RouteTable(routes, cache_size=2)
    for host, path in requests:
        assert table.match(host, path) == ref_match(routes, host, path)


@given(ROUTES, NAMES, PATHS, st.none() | PORTS)
def test_case_and_a_trailing_dot_change_nothing(
    routes: tuple[Route, ...], name: str, path: bytes, port: int | None
) -> None:
    table = RouteTable(routes)
    suffix = f":{port}" if port else ""
    want = table.match(f"{name}{suffix}".encode(), path)
    assert table.match(f"{name.upper()}{suffix}".encode(), path) == want
    assert table.match(f"{name}.{suffix}".encode(), path) == want


@given(ROUTES, NAMES, PATHS, PORTS)
def test_the_port_matters_only_to_routes_that_name_one(
    routes: tuple[Route, ...], name: str, path: bytes, port: int
) -> None:
    portless = tuple(
        Route(r.backend, tuple(h.partition(":")[0] for h in r.hosts), r.path_prefix)
        for r in routes
    )
    table = RouteTable(portless)
    assert table.match(f"{name}:{port}".encode(), path) == table.match(name.encode(), path)


@given(st.sampled_from([b"example.com", b"[2001:db8::1]:80", b"a.b:1"]), PATHS, st.binary())
def test_split_target_gives_the_absolute_forms_host_and_path(
    host: bytes, path: bytes, query: bytes
) -> None:
    assert split_target(path + b"?" + query) == (None, path)
    assert split_target(b"http://" + host + path + b"?" + query) == (host, path)
