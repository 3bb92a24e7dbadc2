"""Blocking probes with timeouts, for the BGP hook (a process of its own, outside ``serve``)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import dns.message
import dns.rcode
import requests

from anycastedge.config.bgp import Check
from anycastedge.config.reader import parse_hostport


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
    response = requests.get(check.target, timeout=timeout, allow_redirects=False)
    if response.status_code not in check.expect_status:
        return False, f"status {response.status_code}"
    if check.body is not None and check.body not in response.text:
        return False, f"status {response.status_code}, body lacks {check.body!r}"
    return True, f"status {response.status_code}"


def _tcp(check: Check, timeout: float) -> tuple[bool, str]:
    host, port = parse_hostport(check.target)
    with socket.create_connection((host, port), timeout=timeout):
        return True, "connected"


_PROBES = {"dns": _dns, "http": _http, "tcp": _tcp}
