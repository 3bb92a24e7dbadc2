"""forward/headers.py: hop-by-hop removal, the client identity fields, the sticky cookie."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.forward.headers import (
    BUILT,
    HOP_BY_HOP,
    SPOOFABLE,
    Headers,
    connection_tokens,
    cookie_value,
    end_to_end,
    forwarding,
    set_cookie,
    sticky_id,
)

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def random_case(draw: st.DrawFn, name: bytes) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(
        c ^ 0x20 if flip and chr(c).isalpha() else c for c, flip in zip(name, flips, strict=True)
    )


tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12).map(str.encode)
values = st.binary(max_size=20).filter(lambda v: b"\r" not in v and b"\n" not in v)


@st.composite
def heads(draw: st.DrawFn) -> tuple[Headers, frozenset[bytes]]:
    """A head mixing ordinary fields, hop-by-hop ones (any case) and fields a Connection field
    names; returns it and the lowercase names that must go."""
    named = draw(st.lists(tokens.map(lambda t: b"x-conn-" + t), max_size=3))
    headers: Headers = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["plain", "hop", "named", "connection"]))
        if kind == "plain":
            name = b"x-keep-" + draw(tokens)
        elif kind == "hop":
            name = draw(st.sampled_from(sorted(HOP_BY_HOP)))
        elif kind == "named" and named:
            name = draw(st.sampled_from(named))
        else:
            name = b"connection"
        value = draw(values)
        if name == b"connection":
            options = draw(st.lists(st.sampled_from(named), max_size=3)) if named else []
            spaced = [b" " * draw(st.integers(0, 2)) + random_case(draw, o) for o in options]
            value = b",".join(spaced) or b"keep-alive"
        headers.append((random_case(draw, name), value))
    listed = {
        o.strip().lower()
        for k, v in headers
        if k.lower() == b"connection"
        for o in v.split(b",")
    }
    return headers, HOP_BY_HOP | frozenset(listed)


@given(heads())
def test_end_to_end_drops_hop_by_hop_and_named_fields_and_keeps_the_rest_in_order(
    case: tuple[Headers, frozenset[bytes]],
) -> None:
    headers, gone = case
    out = end_to_end(headers)
    assert out == [(k, v) for k, v in headers if k.lower() not in gone]
    assert connection_tokens(headers) | HOP_BY_HOP == gone - {b""}
    # Idempotent: nothing left names another field to drop.
    assert end_to_end(out) == out


def test_end_to_end_examples() -> None:
    headers: Headers = [
        (b"Host", b"x"),
        (b"CONNECTION", b"close, X-Secret ,x-other"),
        (b"x-secret", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Other", b"2"),
        (b"Transfer-Encoding", b"chunked"),
        (b"TE", b"trailers"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Upgrade", b"websocket"),
        (b"Trailer", b"X-T"),
        (b"X-Kept", b"yes"),
        (b"X-Forwarded-For", b"203.0.113.7"),
    ]
    assert end_to_end(headers) == [
        (b"Host", b"x"),
        (b"X-Kept", b"yes"),
        (b"X-Forwarded-For", b"203.0.113.7"),
    ]
    assert end_to_end(headers, SPOOFABLE) == [(b"Host", b"x"), (b"X-Kept", b"yes")]
    assert connection_tokens(headers) == {b"close", b"x-secret", b"x-other"}
    # A Connection field naming an end-to-end field that is not there changes nothing else.
    assert end_to_end([(b"Connection", b"x-absent"), (b"A", b"1")]) == [(b"A", b"1")]


# --- forwarding() ---------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(ipv4, ipv6)
spoof_values = st.binary(min_size=1, max_size=30).filter(lambda v: not {13, 10} & set(v))


def as_dict(fields: Headers) -> dict[bytes, bytes]:
    names = [k for k, _ in fields]
    assert len(names) == len(set(names)), names  # one field of each
    return dict(fields)


@given(
    client=addresses,
    proto=st.sampled_from([b"http", b"https"]),
    spoofed=st.lists(st.tuples(st.sampled_from(sorted(BUILT)), spoof_values), max_size=6),
)
def test_untrusted_peers_are_named_by_their_address_only(
    client: str, proto: bytes, spoofed: Headers
) -> None:
    out = as_dict(forwarding(spoofed, client, proto, None, trusted=False))
    assert set(out) == {b"X-Forwarded-For", b"X-Real-IP", b"X-Forwarded-Proto", b"Forwarded"}
    assert out[b"X-Forwarded-For"] == client.encode()
    assert out[b"X-Real-IP"] == client.encode()
    assert out[b"X-Forwarded-Proto"] == proto
    node = f'"[{client}]"' if ":" in client else client
    assert out[b"Forwarded"] == f"for={node};proto={proto.decode()}".encode()


@pytest.mark.parametrize(
    ("client", "node"),
    [
        ("192.0.2.1", b"192.0.2.1"),
        ("2001:db8::1", b'"[2001:db8::1]"'),  # RFC 7239 6: quoted, in brackets
        ("::ffff:192.0.2.1", b'"[::ffff:192.0.2.1]"'),
    ],
)
def test_forwarded_node_syntax(client: str, node: bytes) -> None:
    out = as_dict(forwarding([], client, b"https", b"example.com", trusted=False))
    assert out[b"Forwarded"] == b"for=" + node + b";host=example.com;proto=https"


@pytest.mark.parametrize(
    ("host", "value"),
    [
        (b"example.com", b"example.com"),  # a token: as it is
        (b"example.com:8080", b'"example.com:8080"'),  # ":" is not a token character
        (b"[2001:db8::1]:443", b'"[2001:db8::1]:443"'),
        (b'ev"il\\x', b'"ev\\"il\\\\x"'),  # quoted-pair escapes
        (b"", b'""'),
    ],
)
def test_forwarded_host_is_quoted_unless_a_token(host: bytes, value: bytes) -> None:
    out = as_dict(forwarding([], "192.0.2.1", b"http", host, trusted=False))
    assert out[b"Forwarded"] == b"for=192.0.2.1;host=" + value + b";proto=http"


@given(host=st.binary(max_size=40))
def test_forwarded_host_always_parses_back(host: bytes) -> None:
    """Whatever the Host, the Forwarded element is one for=;host=;proto= triple whose host
    parameter unquotes to the Host exactly (no injection of further parameters)."""
    forwarded = as_dict(forwarding([], "192.0.2.1", b"http", host, trusted=False))[b"Forwarded"]
    assert forwarded.startswith(b"for=192.0.2.1;host=")
    assert forwarded.endswith(b";proto=http")
    param = forwarded[len(b"for=192.0.2.1;host=") : -len(b";proto=http")]
    if param.startswith(b'"'):
        assert param.endswith(b'"') and len(param) >= 2
        inner, out, i = param[1:-1], b"", 0
        while i < len(inner):
            if inner[i : i + 1] == b"\\":
                i += 1
            else:
                assert inner[i : i + 1] != b'"'  # every quote inside is escaped
            out += inner[i : i + 1]
            i += 1
        assert out == host
    else:
        assert param == host and host and all(chr(c) in TOKEN_CHARS for c in host)


@given(
    client=addresses,
    earlier=st.lists(ipv4, min_size=1, max_size=3),
    proto=st.sampled_from([b"http", b"https"]),
)
def test_trusted_peers_fields_are_kept_and_the_client_appended(
    client: str, earlier: list[str], proto: bytes
) -> None:
    incoming: Headers = [
        (b"x-forwarded-for", ", ".join(earlier[:-1]).encode()),
        (b"X-Forwarded-For", earlier[-1].encode()),
        (b"FORWARDED", b"for=" + earlier[0].encode() + b";proto=https"),
        (b"X-Real-IP", earlier[0].encode()),
        (b"X-Forwarded-Proto", b"https"),
    ]
    if len(earlier) == 1:
        incoming = incoming[1:]
    out = as_dict(forwarding(incoming, client, proto, None, trusted=True))
    chain = [a.strip() for a in out[b"X-Forwarded-For"].decode().split(",")]
    assert chain == [*earlier, client]
    assert out[b"X-Real-IP"] == earlier[0].encode()
    assert out[b"X-Forwarded-Proto"] == b"https"  # the first hop's scheme
    node = f'"[{client}]"' if ":" in client else client
    assert out[b"Forwarded"] == (
        f"for={earlier[0]};proto=https, for={node};proto={proto.decode()}".encode()
    )


def test_trusted_peer_without_fields_is_named_as_untrusted_would_be() -> None:
    assert forwarding([], "192.0.2.9", b"http", b"h", trusted=True) == forwarding(
        [], "192.0.2.9", b"http", b"h", trusted=False
    )


# --- cookies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"Cookie", b"AESTICKY=abc")], b"abc"),
        ([(b"cookie", b"a=1; AESTICKY=abc; b=2")], b"abc"),
        ([(b"Cookie", b'a=1;AESTICKY="abc"')], b"abc"),  # quoted
        ([(b"Cookie", b"a=1"), (b"COOKIE", b"AESTICKY=second")], b"second"),  # another field
        ([(b"Cookie", b"AESTICKY=first; AESTICKY=again")], b"first"),
        ([(b"Cookie", b"XAESTICKY=no; AESTICKYX=no")], None),  # whole names only
        ([(b"Cookie", b"aesticky=no")], None),  # names are case-sensitive
        ([(b"X-Cookie", b"AESTICKY=no")], None),
        ([(b"Cookie", b"AESTICKY=")], b""),
        ([], None),
    ],
)
def test_cookie_value(headers: Headers, expected: bytes | None) -> None:
    assert cookie_value(headers, b"AESTICKY") == expected


@given(
    before=st.lists(st.tuples(tokens, tokens), max_size=4),
    value=tokens,
    after=st.lists(st.tuples(tokens, tokens), max_size=4),
)
def test_cookie_value_finds_its_cookie_among_others(
    before: list[tuple[bytes, bytes]], value: bytes, after: list[tuple[bytes, bytes]]
) -> None:
    name = b"AESTICKY"
    others = [(n, v) for n, v in before if not n.startswith(name + b"=")]
    pairs = [*others, (name, value), *[(n, v) for n, v in after if n != name]]
    cookie = b"; ".join(n + b"=" + v for n, v in pairs)
    # Another name ending in "=..." would only confuse a prefix match on the whole pair.
    if any((n + b"=" + v).startswith(name + b"=") for n, v in others):
        return
    assert cookie_value([(b"Cookie", cookie)], name) == value


@given(
    backend=st.text(min_size=1, max_size=20),
    address=addresses,
    port=st.integers(1, 65535),
)
def test_sticky_id_is_stable_opaque_and_per_endpoint(backend: str, address: str, port: int) -> None:
    value = sticky_id(backend, address, port)
    assert value == sticky_id(backend, address, port)
    assert address.encode() not in value
    assert ipaddress.ip_address(address).packed.hex().encode() not in value
    assert len(value) == 16 and all(c in b"0123456789abcdef" for c in value)
    assert value != sticky_id(backend, address, port % 65535 + 1)
    assert value != sticky_id(backend + "x", address, port)
    # A cookie carrying it reads back as it.
    header = set_cookie(b"AESTICKY", value, secure=False)
    assert cookie_value([(b"Cookie", header.split(b";")[0])], b"AESTICKY") == value


def test_set_cookie_attributes() -> None:
    assert set_cookie(b"S", b"v", secure=False) == b"S=v; Path=/; HttpOnly"
    assert set_cookie(b"S", b"v", secure=True) == b"S=v; Path=/; HttpOnly; Secure"


def test_sticky_id_known_value_is_stable_across_processes() -> None:
    """Not salted per process: POPs and restarts agree (blake2s of "backend/host/port")."""
    import hashlib

    expected = hashlib.blake2s(b"app/127.0.0.1/8080", digest_size=8).hexdigest().encode()
    assert sticky_id("app", "127.0.0.1", 8080) == expected
