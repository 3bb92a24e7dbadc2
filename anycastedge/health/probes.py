"""Blocking probes with timeouts: the BGP hook's checks and the GSLB monitor's ``check_target``."""

from __future__ import annotations

import email.message
import socket
import time
import urllib.parse
from dataclasses import dataclass

import dns.message
import dns.rcode
import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection

from anycastedge.config.bgp import Check
from anycastedge.config.reader import parse_hostport
from anycastedge.gslb.model import CheckTarget, HealthCheck

BODY_LIMIT = 64 * 1024  # how much of a response body a GSLB check reads, at most
USER_AGENT = "anycastedge-health"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome."""

    ok: bool
    latency: float
    detail: str


def probe(check: Check, timeout: float) -> ProbeResult:
    """Run one check; anything unexpected, including a hang past ``timeout``, is a failure."""
    start = time.monotonic()
    try:
        ok, detail = _PROBES[check.kind](check, timeout)
    except Exception as exc:  # a probe must never take the hook down
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return ProbeResult(ok, time.monotonic() - start, detail)


def _dns(check: Check, timeout: float) -> tuple[bool, str]:
    host, port = parse_hostport(check.target)
    query = dns.message.make_query(check.name, check.qtype)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # A connected socket hears the ICMP port-unreachable of a stopped server at once, instead of
    # waiting out the timeout: detection time is then rounds, not timeouts.
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(query.to_wire())
        try:
            while True:
                reply = dns.message.from_wire(sock.recv(65535))
                if reply.id == query.id:
                    break
        except TimeoutError:
            return False, "timeout"
        except ConnectionRefusedError:
            return False, "port unreachable"
    rcode = dns.rcode.to_text(reply.rcode())
    if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
        return False, f"{rcode} with {len(reply.answer)} answer RRsets"
    return True, f"{rcode}, {sum(len(r) for r in reply.answer)} records"


def _http(check: Check, timeout: float) -> tuple[bool, str]:
    """The hook's URL check, run by the same HTTP probe as the GSLB checks."""
    url = urllib.parse.urlsplit(check.target)
    scheme = url.scheme.upper()
    if scheme not in ("HTTP", "HTTPS") or not url.hostname:
        raise ValueError(f"not an http(s) URL: {check.target}")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    how = HealthCheck(
        protocol=scheme,
        path=path,
        port=url.port or (443 if scheme == "HTTPS" else 80),
        timeout=timeout,
        expect_status=frozenset(check.expect_status),
        body=check.body,
    )
    return _http_target(CheckTarget(url.hostname, how), time.monotonic() + timeout)


def _tcp(check: Check, timeout: float) -> tuple[bool, str]:
    host, port = parse_hostport(check.target)
    return _tcp_connect(host, port, timeout)


_PROBES = {"dns": _dns, "http": _http, "tcp": _tcp}


def check_target(target: CheckTarget) -> ProbeResult:
    """Probe one GSLB target within its check's timeout; never raises (failures are results)."""
    start = time.monotonic()
    check = target.check
    try:
        if check.protocol.upper() == "TCP":
            ok, detail = _tcp_connect(target.address, check.port, check.timeout)
        elif check.protocol.upper() in ("HTTP", "HTTPS"):
            ok, detail = _http_target(target, start + check.timeout)
        else:
            ok, detail = False, f"unknown protocol {check.protocol!r}"
    except Exception as exc:  # a probe runs in the monitor's pool: it must report, not raise
        ok, detail = False, describe_error(exc)
    return ProbeResult(ok, time.monotonic() - start, detail)


def _tcp_connect(address: str, port: int, timeout: float) -> tuple[bool, str]:
    with socket.create_connection((address, port), timeout=timeout):
        return True, "connected"


def _http_target(target: CheckTarget, deadline: float) -> tuple[bool, str]:
    check = target.check
    conn: HTTPConnection
    # One fresh connection per check, straight from urllib3's connection classes: a pool would add
    # retries, redirects and keep-alive reuse (which would hide a server that stopped accepting),
    # and would warn on every unverified HTTPS check.
    if check.protocol.upper() == "HTTPS":
        conn = HTTPSConnection(
            target.address,
            check.port,
            timeout=check.timeout,
            server_hostname=check.host or None,  # SNI is the configured host, not the address
            cert_reqs="CERT_REQUIRED" if check.tls_verify else "CERT_NONE",
            # None: the ssl module checks the certificate against server_hostname (host, or the
            # address when no host is set); False: no hostname check without verification.
            assert_hostname=None if check.tls_verify else False,
        )
    else:
        conn = HTTPConnection(target.address, check.port, timeout=check.timeout)
    # Without a Host header urllib3 sends the address (bracketed for IPv6, with a non-default port).
    headers = {"User-Agent": USER_AGENT, "Connection": "close"}
    if check.host:
        headers["Host"] = check.host
    try:
        conn.connect()
        _set_remaining(conn, deadline)
        conn.request("GET", check.path, headers=headers, preload_content=False)
        response = conn.getresponse()
        status = response.status
        if status not in check.expect_status:
            return False, f"status {status}"
        if check.body is None:
            return True, f"status {status}"
        text = _read_text(conn, response, check.body, deadline)
        if check.body not in text:
            return False, f"status {status}, body lacks {check.body!r}"
        return True, f"status {status}"
    finally:
        conn.close()


def _read_text(
    conn: HTTPConnection, response: urllib3.BaseHTTPResponse, want: str, deadline: float
) -> str:
    """Up to BODY_LIMIT bytes of the body, decoded; stops early once ``want`` is in it."""
    body = b""
    message = email.message.Message()
    message["Content-Type"] = response.headers.get("Content-Type", "")
    charset = message.get_content_charset("utf-8")
    text = ""
    while len(body) < BODY_LIMIT:  # bounded: every chunk adds at least one byte or ends the loop
        _set_remaining(conn, deadline)
        # read1 returns what has arrived: a server that sends the text and then stalls passes.
        chunk = response.read1(BODY_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
        text = _decode(body, charset)
        if want in text:
            break
    return text


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know: UTF-8 still finds ASCII needles
        return body.decode("utf-8", errors="replace")


def _set_remaining(conn: HTTPConnection, deadline: float) -> None:
    """Bound the next socket operation by what is left of the check's timeout."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("check timeout exceeded")
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def describe_error(exc: BaseException) -> str:
    """A short detail for a failed probe: 'timeout', 'connection refused', or the exception."""
    # urllib3 wraps socket errors (NewConnectionError from ConnectionRefusedError, ...), and
    # NewConnectionError subclasses its ConnectTimeoutError: look at the whole chain, refusal first.
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:  # bounded: causes can, in theory, form a cycle
        chain.append(current)
        current = current.__cause__ or current.__context__
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(_is_timeout(e) for e in chain):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return False  # a connection error (unreachable, reset, ...), not a timeout
    return isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError)
