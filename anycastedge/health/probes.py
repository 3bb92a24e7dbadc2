"""Blocking probes with timeouts, one per protocol: TCP connect, HTTP(S) GET, DNS query."""

from __future__ import annotations

import email.message
import socket
import time
from dataclasses import dataclass

import dns.edns
import dns.message
import dns.rcode
import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection

from anycastedge.health.check import PROBE_EDNS_OPTION, CheckTarget

BODY_LIMIT = 64 * 1024  # how much of a response body a GSLB check reads, at most
USER_AGENT = "anycastedge-health"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome."""

    ok: bool
    latency: float
    detail: str


def probe(target: CheckTarget) -> ProbeResult:
    """Probe one target within its check's timeout; never raises (failures are results)."""
    start = time.monotonic()
    check = target.check
    try:
        protocol = check.protocol.upper()
        if protocol == "TCP":
            ok, detail = _tcp_connect(target.address, check.port, check.timeout)
        elif protocol in ("HTTP", "HTTPS"):
            ok, detail = _http_target(target, start + check.timeout)
        elif protocol == "DNS":
            ok, detail = _dns(target)
        else:
            ok, detail = False, f"unknown protocol {check.protocol!r}"
    except Exception as exc:  # probes run in pools and in the hook: they report, never raise
        ok, detail = False, describe_error(exc)
    return ProbeResult(ok, time.monotonic() - start, detail)


def _dns(target: CheckTarget) -> tuple[bool, str]:
    check = target.check
    marker = dns.edns.GenericOption(dns.edns.OptionType.make(PROBE_EDNS_OPTION), b"")
    query = dns.message.make_query(check.qname, check.qtype, use_edns=0, options=[marker])
    family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
    # A connected socket hears the ICMP port-unreachable of a stopped server at once, instead of
    # waiting out the timeout: detection time is then rounds, not timeouts.
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(check.timeout)
        sock.connect((target.address, check.port))
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
