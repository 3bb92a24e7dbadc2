"""HTTP heads as the proxy rewrites them: hop-by-hop fields removed, the client named.

Pure functions over parsed heads (lists of raw ``(name, value)`` byte pairs, as the parser gave
them); nothing here parses HTTP. Header names compare case-insensitively.
"""

from __future__ import annotations

import hashlib
import re

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 and the legacy ones every proxy strips; fields named by Connection go too.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The fields ``forwarding`` builds (from a trusted peer's own, or anew) ...
BUILT = frozenset({b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto", b"forwarded"})
# ... and what else a client could use to claim another address, host or scheme: all dropped
# unless the peer is a trusted upstream.
SPOOFABLE = BUILT | {b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-server"}
# Retried after the request went out only if it also had no body (Twisted's _shouldRetry).
RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"DELETE"})

# Connection options that name no field anyone sends (or only hop-by-hop ones, gone anyway).
_CONNECTION_OPTIONS = HOP_BY_HOP | {b"close", b""}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """The lowercased options of every Connection field."""
    out: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            out.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(out)


def end_to_end(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """``headers`` without hop-by-hop fields, those Connection names, and ``drop`` (lowercase)."""
    return split_hop_by_hop(headers, drop)[0]


def split_hop_by_hop(
    headers: Headers, drop: frozenset[bytes] = frozenset()
) -> tuple[Headers, frozenset[bytes]]:
    """``end_to_end``'s fields, and the lowercase names of the hop-by-hop fields and
    Content-Length there were (a response's framing is read from them). One pass: this runs
    twice per request."""
    out = []
    seen: set[bytes] = set()
    named: set[bytes] = set()
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            seen.add(low)
            if low == b"connection":
                named.update(t.strip().lower() for t in value.split(b","))
        elif low not in drop:
            if low == b"content-length":
                seen.add(low)
            out.append((name, value))
    named -= _CONNECTION_OPTIONS
    if named:  # rare: fields named by Connection, wherever they stand
        out = [(name, value) for name, value in out if name.lower() not in named]
    return out, frozenset(seen)


def _forwarded_node(address: str) -> bytes:
    """An RFC 7239 node: IPv6 in brackets and quotes, as its grammar requires."""
    if ":" in address:
        return b'"[' + address.encode() + b']"'
    return address.encode()


def _forwarded_value(value: bytes) -> bytes:
    """A token as it is, anything else as a quoted-string."""
    if _TOKEN.fullmatch(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwarding(
    headers: Headers, client: str, proto: bytes, host: bytes | None, trusted: bool
) -> Headers:
    """The client identity fields to send upstream.

    From a trusted peer its X-Forwarded-For and Forwarded are kept and ``client`` appended, and
    its X-Real-IP and X-Forwarded-Proto kept; from anyone else every such field it sent is
    replaced (it could name any address).
    """
    xff: list[bytes] = []
    fwd: list[bytes] = []
    real_ip = xfp = None
    if trusted:
        for name, value in headers:
            low = name.lower()
            if low == b"x-forwarded-for":
                xff.append(value)
            elif low == b"forwarded":
                fwd.append(value)
            elif low == b"x-real-ip":
                real_ip = value
            elif low == b"x-forwarded-proto":
                xfp = value
    address = client.encode()
    xff.append(address)
    element = b"for=" + _forwarded_node(client)
    if host is not None:
        element += b";host=" + _forwarded_value(host)
    fwd.append(element + b";proto=" + proto)
    return [
        (b"X-Forwarded-For", b", ".join(xff)),
        (b"X-Real-IP", real_ip if real_ip is not None else address),
        (b"X-Forwarded-Proto", xfp if xfp is not None else proto),
        (b"Forwarded", b", ".join(fwd)),
    ]


def cookie_value(headers: Headers, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's Cookie fields (the first one)."""
    prefix = name + b"="
    for field, value in headers:
        if field.lower() != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part.startswith(prefix):
                return part[len(prefix) :].strip(b'"')
    return None


def sticky_id(backend: str, host: str, port: int) -> bytes:
    """The sticky cookie's value for an endpoint: stable across reloads and POPs, and not its
    address (clients need not learn the backends' addresses)."""
    digest = hashlib.blake2s(f"{backend}/{host}/{port}".encode(), digest_size=8).hexdigest()
    return digest.encode()


def set_cookie(name: bytes, value: bytes, secure: bool) -> bytes:
    """The Set-Cookie value that makes a client stick to an endpoint for the session."""
    return name + b"=" + value + b"; Path=/; HttpOnly" + (b"; Secure" if secure else b"")
