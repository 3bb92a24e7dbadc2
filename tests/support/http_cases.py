"""HTTP requests to fuzz an HTTP listener's front with, and what each must be answered: shared by
the test over real sockets (tests/integration/test_http_fuzz.py) and the in-memory fuzz target
(tests/fuzz/test_http_front.py). Both run them against an endpoint that answers 200 to every
request it gets, whatever its path or body.

Each ``Case`` is one connection's bytes: malformed and semi-valid requests (random bytes, mutated
request lines, bad header fields, framing conflicts, bad chunk sizes, truncated heads, pipelined
mixes) and the statuses they must get.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from hypothesis import strategies as st

# Ends every payload but the truncated ones: a request that closes the connection, so that each
# exchange ends by itself. After an unfinished head it becomes part of that head.
SENTINEL = b"GET /fuzz-end?@TAG@ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
BAD = frozenset({400})
OK = frozenset({200})
ANY = frozenset(range(100, 600))
serial = itertools.count()
TAG = b"@TAG@"  # replaced by a tag of its own in each example's targets, to know its requests


@dataclass
class Case:
    """One connection's bytes and what its reply must be."""

    kind: str
    payload: bytes
    first: frozenset[int]  # the statuses the first response may have
    # The whole list of statuses expected (None: only ``first`` is checked).
    statuses: list[int] | None = None
    methods: list[bytes] = field(default_factory=list)  # of the responses, for HEAD's
    half_close: bool = False  # shut our side after sending (no sentinel)
    empty_ok: bool = False  # the proxy may close without answering
    reaches_endpoint: bool | None = None  # None: not checked
    marker: str = ""  # in the target of the requests the endpoint must see, in order
    expected_paths: list[str] = field(default_factory=list)


def head(method: bytes = b"GET", target: bytes = b"/echo", *fields: bytes) -> bytes:
    target += (b"&" if b"?" in target else b"?") + TAG
    return method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(
        f + b"\r\n" for f in fields
    ) + b"\r\n"


# --- request lines --------------------------------------------------------------------------

GOOD_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE"]
BAD_METHODS = [b"get", b"G\x00ET", b"GE T", b"\x7fGET", b"G(ET", b"", b"[GET]", b"GET\x01"]
GOOD_TARGETS = [b"/", b"/echo/x", b"/echo?q=1&r=%20", b"http://x/echo/abs", b"/a/../echo"]
BAD_TARGETS = [b"/a\x00b", b"/\x01", b"/a\x7f", b"/a\r\x0bb"]
ODD_TARGETS = [b"*", b"x", b"//", b"/%", b"/a#frag", b"https://", b"/\xff\xfe"]
GOOD_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0"]
BAD_VERSIONS = [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1", b"http/1.1", b"HTTP/11",
                b"HTTP/1.1x", b"HTTP/3.0", b"HTTPS/1.1", b"HTTP/1.\x00"]  # fmt: skip


@st.composite
def request_lines(draw: st.DrawFn) -> Case:
    method_ok, target_kind, version_ok = draw(st.booleans()), draw(st.integers(0, 2)), \
        draw(st.booleans())  # fmt: skip
    method = draw(st.sampled_from(GOOD_METHODS if method_ok else BAD_METHODS))
    target = draw(st.sampled_from([GOOD_TARGETS, BAD_TARGETS, ODD_TARGETS][target_kind]))
    version = draw(st.sampled_from(GOOD_VERSIONS if version_ok else BAD_VERSIONS))
    target += (b"&" if b"?" in target else b"?") + TAG
    payload = method + b" " + target + b" " + version + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    # The sentinel only after a request that keeps the connection open: an error answer or an
    # HTTP/1.0 one closes it (data after those is the subject of tests of its own below).
    keep = version == b"HTTP/1.1" and method_ok and target_kind != 1
    if keep:
        payload += SENTINEL
    methods = [method, b"GET"]
    if method_ok and target_kind == 0 and version_ok:
        return Case("request line", payload, OK, [200, 200] if keep else [200], methods)
    if not method_ok or target_kind == 1 or not version_ok:
        # An error answer to a HEAD (the method known from the request line) has no body.
        return Case("request line", payload, BAD, [400], methods, reaches_endpoint=False)
    return Case("request line", payload, ANY, methods=methods)


# --- header fields --------------------------------------------------------------------------

# (fields, the first response's statuses, whether the endpoint may see it)
FIELDS: list[tuple[list[bytes], frozenset[int], bool]] = [
    ([b"X-Bad\x00: v"], BAD, False),
    ([b"X-A: v\x00w"], BAD, False),
    ([b"X A: v"], BAD, False),
    ([b"X-A : v"], BAD, False),  # RFC 9112 5.1: whitespace before the colon MUST be refused
    ([b": v"], BAD, False),
    ([b"X-A\x7f: v"], BAD, False),
    ([b"X-\xff: v"], BAD, False),
    ([b"X-A v"], BAD, False),  # no colon
    ([b"X-A: v\rw"], BAD, False),  # a bare CR
    ([b"X-A: v", b" folded"], frozenset({200, 400}), True),  # obs-fold: refuse or unfold
    ([b"X-A: v", b"\tfolded"], frozenset({200, 400}), True),
    ([b" X-A: v"], BAD, False),  # whitespace before the first field
    ([b"X-Big: " + b"a" * 9000], frozenset({431}), False),
    ([b"X-%d: v" % i for i in range(60)], frozenset({431}), False),
    ([b"Host: y"], BAD, False),  # a second Host
    ([b"X-A:\tv\t"], OK, True),
    ([b"X-A: \x80\xff obs-text"], OK, True),
    ([b"X-A:"], OK, True),  # an empty value
    ([b"Content-Length: 1", b"Content-Length: 2"], BAD, False),
    ([b"Content-Length: 0", b"Content-Length: 0"], frozenset({200, 400}), True),
    ([b"Content-Length: 0, 0"], frozenset({200, 400}), True),
    ([b"Content-Length: -1"], BAD, False),
    ([b"Content-Length: +0"], BAD, False),
    ([b"Content-Length: 0x0"], BAD, False),
    ([b"Content-Length: 1e3"], BAD, False),
    ([b"Content-Length: abc"], BAD, False),
    ([b"Content-Length: "], BAD, False),
    ([b"Content-Length: 99999999999999999999999999"], frozenset({400, 413}), False),
    ([b"Content-Length: 200000"], frozenset({413}), False),  # over max_body: refused at once
    ([b"Transfer-Encoding: chunked", b"Content-Length: 3"], BAD, False),  # smuggling
    ([b"Content-Length: 3", b"Transfer-Encoding: chunked"], BAD, False),
    ([b"Transfer-Encoding: xchunked"], BAD, False),
    ([b"Transfer-Encoding: chunked, gzip"], BAD, False),  # chunked not last
    ([b"Transfer-Encoding: gzip"], BAD, False),
    ([b"Transfer-Encoding: identity"], BAD, False),
    ([b"Transfer-Encoding : chunked"], BAD, False),
    ([b"Transfer-Encoding: \x0bchunked"], BAD, False),
]


@st.composite
def header_fields(draw: st.DrawFn) -> Case:
    fields, first, may_reach = draw(st.sampled_from(FIELDS))
    # For the framing cases, what follows is a body the endpoint must not take for a request.
    body = b"0\r\n\r\n" if any(b"chunked" in f for f in fields) else b""
    payload = head(b"POST", b"/upload", *fields) + body + SENTINEL
    statuses = [400] if first == BAD else None
    # A Transfer-Encoding the parser refuses is refused after the head went out on a pooled
    # connection, sometimes: test_a_refused_transfer_encoding_never_reaches_the_endpoint.
    framing = any(f.lower().startswith(b"transfer-encoding") for f in fields)
    return Case("header", payload, first, statuses, [b"POST", b"GET"],
                reaches_endpoint=None if may_reach or framing else False)  # fmt: skip


TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@st.composite
def random_fields(draw: st.DrawFn) -> Case:
    """A generated field: a token name with a visible value must pass; NUL, CR or LF in the
    value, or a name that is no token, must get 400."""
    # No colon: the name would just end there (a shorter, valid name; the rest its value).
    name = b"X-" + draw(st.binary(min_size=1, max_size=12).filter(lambda b: b":" not in b))
    value = draw(st.binary(max_size=40))
    if b"\n" in value or b"\r" in value:
        return Case("field", head(b"GET", b"/echo", name + b": " + value) + SENTINEL, ANY,
                    methods=[b"GET", b"GET"])  # fmt: skip
    token = all(c in TOKEN for c in name)
    control = any(c < 0x20 and c != 0x09 or c == 0x7F for c in value)
    payload = head(b"GET", b"/echo", name + b": " + value) + SENTINEL
    if not token or b"\x00" in value:
        return Case("field", payload, BAD, [400], reaches_endpoint=False)
    if control:
        return Case("field", payload, frozenset({200, 400}), methods=[b"GET", b"GET"])
    return Case("field", payload, OK, [200, 200], [b"GET", b"GET"], reaches_endpoint=True)


# --- bodies ---------------------------------------------------------------------------------

CHUNKS: list[tuple[bytes, frozenset[int]]] = [
    (b"3\r\nabc\r\n0\r\n\r\n", OK),
    (b"3;ext=1\r\nabc\r\n0\r\n\r\n", OK),
    (b"A\r\n0123456789\r\n0\r\n\r\n", OK),
    (b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", OK),
    (b"zz\r\n", BAD),
    (b"-1\r\n", BAD),
    (b"0x3\r\nabc\r\n0\r\n\r\n", BAD),
    (b"ffffffffffffffffffffff\r\nabc\r\n", BAD),
    (b"3\r\nabcd\r\n0\r\n\r\n", BAD),
    (b"3\r\nab\r\n0\r\n\r\n", BAD),
    (b"3\r\nabcXX0\r\n\r\n", BAD),
    (b"3 \r\nabc\r\n0\r\n\r\n", frozenset({200, 400})),
    (b"3\nabc\n0\n\n", frozenset({200, 400})),
    (b"\r\n", BAD),
]


@st.composite
def chunked_bodies(draw: st.DrawFn) -> Case:
    body, first = draw(st.sampled_from(CHUNKS))
    payload = head(b"POST", b"/upload", b"Transfer-Encoding: chunked") + body + SENTINEL
    # A chunk error comes after the head went to the endpoint: answered 400 or cut.
    return Case("chunked", payload, first, [200, 200] if first == OK else None,
                [b"POST", b"GET"], empty_ok=first != OK)  # fmt: skip


# --- random bytes, truncated heads, pipelines -----------------------------------------------


@st.composite
def random_bytes(draw: st.DrawFn) -> Case:
    junk = draw(st.binary(min_size=1, max_size=300))
    if not junk.strip(b"\r\n"):
        return Case("random", junk + SENTINEL, frozenset({200, 400}))
    return Case("random", junk + SENTINEL, BAD, [400], reaches_endpoint=False)


VALID = [
    head(b"GET", b"/echo/t"),
    head(b"POST", b"/upload", b"Content-Length: 5") + b"hello",
    head(b"POST", b"/upload", b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
    head(b"GET", b"/echo/t", b"Cookie: a=b", b"Accept: */*", b"X-" + b"v" * 100 + b": w"),
]


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    request = draw(st.sampled_from(VALID))
    end = request.index(b"\r\n\r\n") + 4
    cut = draw(st.integers(1, end - 1))
    return Case("truncated", request[:cut], frozenset({400, 408}), [], half_close=True,
                empty_ok=True, reaches_endpoint=False)  # fmt: skip


# Malformed requests the parser takes and the proxy refuses when their turn comes. (Those the
# parser itself refuses are the subject of test_a_malformed_pipelined_request_* below.)
MALFORMED = [
    b"GET /echo HTTP/1.1\r\n\r\n",  # no Host
    head(b"GET", b"/echo", b"Host: y"),  # two
]


@st.composite
def pipelines(draw: st.DrawFn) -> Case:
    """Valid requests, maybe a malformed one among them: every valid one before it answered,
    in order, then 400 and the connection closed."""
    marker = f"fz{next(serial)}x"
    items = draw(st.lists(st.integers(0, len(VALID) + len(MALFORMED) - 1), min_size=1,
                          max_size=5))  # fmt: skip
    payload = b""
    statuses: list[int] = []
    paths: list[str] = []
    broken = False
    for n, item in enumerate(items):
        if item >= len(VALID):
            payload += MALFORMED[item - len(VALID)]
            if not broken:
                statuses.append(400)
            broken = True
            continue
        tag = f"{marker}{n}"
        request = VALID[item].replace(b"/echo/t", f"/echo/{tag}".encode()).replace(
            b"/upload", f"/upload?{tag}".encode()
        )
        payload += request
        if not broken:
            statuses.append(200)
            paths.append(request.split(b" ")[1].decode())
    if not broken:
        statuses.append(200)
    return Case("pipeline", payload + SENTINEL, frozenset({statuses[0]}), statuses,
                [b"GET"] * len(statuses), marker=marker, expected_paths=paths)  # fmt: skip


cases = st.one_of(
    request_lines(), header_fields(), random_fields(), chunked_bodies(), random_bytes(),
    truncated(), pipelines(),
)  # fmt: skip


# --- reading the answers ------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\n")


def responses(data: bytes, methods: list[bytes]) -> list[int]:
    """The statuses of the complete HTTP/1.1 responses ``data`` is; AssertionError if it is
    anything else (garbage, a cut response)."""
    statuses: list[int] = []
    rest = data
    while rest:
        match = STATUS_LINE.match(rest)
        assert match, f"not a status line: {rest[:120]!r}"
        head_end = rest.find(b"\r\n\r\n")
        assert head_end >= 0, f"a cut head: {rest[:200]!r}"
        status = int(match.group(1))
        fields: dict[bytes, bytes] = {}
        for line in rest[match.end() : head_end].split(b"\r\n"):
            if line:
                name, colon, value = line.partition(b":")
                assert colon and name and name == name.strip(), line
                fields[name.lower()] = value.strip()
        rest = rest[head_end + 4 :]
        if status < 200:
            continue  # an interim response
        method = methods[len(statuses)] if len(statuses) < len(methods) else b"GET"
        if method == b"HEAD" and status == 400 and b"content-length" in fields \
                and len(rest) == int(fields[b"content-length"]):  # fmt: skip
            rest = b""  # the error body sent to HEAD: test_error_answers_to_head_have_no_body
        elif method == b"HEAD" or status in (204, 304):
            pass
        elif b"transfer-encoding" in fields:
            assert fields[b"transfer-encoding"].lower() == b"chunked", fields
            while True:
                line_end = rest.find(b"\r\n")
                assert line_end >= 0, f"a cut chunked body: {rest[:80]!r}"
                size = int(rest[:line_end].split(b";")[0], 16)
                rest = rest[line_end + 2 :]
                if size == 0:
                    trailer_end = rest.find(b"\r\n") if rest.startswith(b"\r\n") else \
                        rest.find(b"\r\n\r\n") + 2  # fmt: skip
                    rest = rest[trailer_end + 2 :]
                    break
                assert len(rest) >= size + 2 and rest[size : size + 2] == b"\r\n"
                rest = rest[size + 2 :]
        elif b"content-length" in fields:
            length = int(fields[b"content-length"])
            assert len(rest) >= length, f"a cut body: {len(rest)} of {length} bytes"
            rest = rest[length:]
        else:
            rest = b""  # delimited by the close
        statuses.append(status)
    return statuses
