"""Hypothesis against the HTTP listener's front over real sockets: malformed and semi-valid
requests (random bytes, mutated request lines, bad header fields, framing conflicts, bad chunk
sizes, truncated heads, pipelined mixes) sent to one `anycastedge serve`.

Every reply must be a sequence of well-formed HTTP/1.1 responses (or nothing: the connection
closed); malformed requests get 400 (431/413 for limits) and never reach the endpoint; valid ones
are answered in order; the process survives, serves afterwards and logs no traceback. The cases
are tests/support/http_cases.py's, which tests/fuzz/test_http_front.py also runs in memory.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from tests.support.forward import POLL, Pop, proxy, raw
from tests.support.http_backend import EndpointServer, endpoints
from tests.support.http_cases import TAG, Case, cases, responses, serial
from tests.support.server import wait_for

LIMITS = "header_timeout: 3\nidle_timeout: 3\nmax_header_size: 8192\nmax_headers: 50\n" \
         "max_body: 100000"  # fmt: skip


# --- the exchange ---------------------------------------------------------------------------


def send(p: Pop, case: Case) -> bytes:
    """The bytes of ``case`` on a new connection; all that comes back until the proxy closes
    (a reset ends it too); bounded by POLL."""
    with p.connect("web") as sock:
        with contextlib.suppress(OSError):
            sock.sendall(case.payload)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + POLL
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no close within {POLL}s; got {out[:200]!r}"
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return out
            if not chunk:
                return out
            out += chunk


def check(p: Pop, servers: list[EndpointServer], case: Case) -> None:
    tag = f"t{next(serial)}x"
    case.payload = case.payload.replace(TAG, tag.encode())
    data = send(p, case)
    assert p.server.alive(), p.server.log_text()[-2000:]
    statuses = responses(data, case.methods)
    if not statuses:
        assert case.empty_ok or case.statuses == [], f"no answer to {case.payload[:300]!r}"
    else:
        assert statuses[0] in case.first, (statuses, case.payload[:300])
        if case.statuses is not None:
            assert statuses == case.statuses, (statuses, case.payload[:300])
    # The requests of this example the endpoint has seen by now (those it got are answered).
    seen = [r for r in servers[0].seen.requests if tag in r["path"]]
    paths = [r["path"] for r in seen if not r["path"].startswith("/fuzz-end")]
    if case.reaches_endpoint is False:
        assert not paths, case.payload[:300]
    elif case.reaches_endpoint:
        assert paths, case.payload[:300]
    if statuses and statuses[-1] in (400, 408, 413, 431):
        # An error answer closes the connection: nothing after it is processed.
        assert len(seen) == len(paths), case.payload[:300]
    if case.marker:
        got = [r["path"] for r in servers[0].seen.requests if case.marker in r["path"]]
        assert got == [path.replace(TAG.decode(), tag) for path in case.expected_paths], \
            case.payload[:300]  # fmt: skip
    for request in seen:
        for name, value in request["headers"]:
            assert not any(c in value for c in "\x00\r\n"), (name, value)
            assert name.lower() != "transfer-encoding" or value.lower() == "chunked"


def test_fuzzed_requests_get_well_formed_answers_and_the_proxy_survives(tmp_path: Path) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}, extra=LIMITS) as (p, url):

        slow = [HealthCheck.too_slow, HealthCheck.data_too_large]

        @settings(max_examples=150, deadline=None, suppress_health_check=slow)
        @given(case=cases)
        def run(case: Case) -> None:
            check(p, servers, case)

        run()
        assert p.server.alive()
        r = requests.get(url + "/echo/after", timeout=POLL)
        assert r.status_code == 200 and r.json()["path"] == "/echo/after"
        log = p.server.log_text()
        assert "Unhandled Error" not in log and "Traceback" not in log, log[-5000:]



# --- what the fuzzing found, pinned down ------------------------------------------------------


def statuses_of(reply: bytes) -> list[int]:
    return responses(reply, [b"GET"] * 8)


@pytest.mark.parametrize("first", [
    b"GET /echo/first HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /echo/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
])  # fmt: skip
def test_data_after_a_closing_request_does_not_replace_its_answer(
    tmp_path: Path, first: bytes
) -> None:
    """A request that closes the connection is answered; what the client sent after it is
    not processed (RFC 9112 9.6) and not answered."""
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, _):
        reply = raw(p, first + b"GET /echo/second HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses_of(reply) == [200], reply[:300]
        assert [r["path"] for r in servers[0].seen.requests] == ["/echo/first"]


@pytest.mark.parametrize("malformed", [
    b"\x00\x01\x02\r\n\r\n",
    b"get /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
])  # fmt: skip
def test_a_malformed_pipelined_request_does_not_preempt_the_one_in_flight(
    tmp_path: Path, malformed: bytes
) -> None:
    """Responses go in request order: the valid request before it is answered 200, then the
    malformed one 400 (as when the parser takes its head: MALFORMED in the fuzzing)."""
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, _):
        reply = raw(p, b"GET /echo/first HTTP/1.1\r\nHost: x\r\n\r\n" + malformed)
        assert statuses_of(reply) == [200, 400], reply[:300]
        assert [r["path"] for r in servers[0].seen.requests] == ["/echo/first"]


def test_one_error_answer_per_connection(tmp_path: Path) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, _):
        reply = raw(p, b"GET / HTTP/2.0\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses_of(reply) == [400], reply
        assert servers[0].seen.requests == []


@pytest.mark.parametrize("coding", [b"gzip", b"identity"])
def test_a_refused_transfer_encoding_never_reaches_the_endpoint(
    tmp_path: Path, coding: bytes
) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, _):
        # An idle pooled connection to the endpoint, as there is on any busy proxy.
        warm = raw(p, b"GET /echo/warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert statuses_of(warm) == [200]
        reply = raw(p, b"POST /upload?refused HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                       + coding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
        assert statuses_of(reply) == [400]

        def reached() -> bool:
            return any("refused" in r["path"] for r in servers[0].seen.requests)

        with pytest.raises(TimeoutError):
            wait_for(reached, 2.0, "the refused request at the endpoint (it must never come)")


def test_error_answers_to_head_have_no_body(tmp_path: Path) -> None:
    """RFC 9110 9.3.2: no content in a response to HEAD, the proxy's own answers included."""
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, _):
        reply = raw(p, b"HEAD x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert reply.endswith(b"\r\n\r\n"), reply
