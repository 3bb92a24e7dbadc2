"""DNS over TCP limits on a real `anycastedge serve`, over real loopback sockets: a silent client
and a trickling one are cut off, one client address cannot take more than its share of
connections while another address is still served, and a connection closes after its last
allowed query is answered. /metrics says why each connection closed.

No test here asserts how long anything took: timeouts are configured small, every wait is bounded,
and which timer closed a connection is read from the server's own counters.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.server import (
    DEFAULT_POP,
    ServerHandle,
    copy_repo_zones,
    minimal_pop_yaml,
    running_server,
    wait_for,
)

WAIT = 10.0  # bound on any single wait; a healthy server acts in milliseconds
CLOSED = "anycastedge_dns_tcp_connections_closed_total"
OPEN = "anycastedge_dns_tcp_connections_open"
PER_CLIENT = 3
MAX_QUERIES = 5
#: A second client address: all of 127.0.0.0/8 is the loopback interface.
OTHER_CLIENT = "127.0.0.2"


def serve(base: Path, **dns: object) -> contextlib.AbstractContextManager[ServerHandle]:
    config = minimal_pop_yaml(base, DEFAULT_POP, dns=dns)
    return running_server(copy_repo_zones(base / "zones"), config=config)


@pytest.fixture(scope="module")
def timers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """Short timers: idle 1 s, read 0.3 s (a trickle of one byte per 0.1 s never idles)."""
    with serve(
        tmp_path_factory.mktemp("timers"), tcp_idle_timeout=1.0, tcp_read_timeout=0.3
    ) as handle:
        yield handle


@pytest.fixture(scope="module")
def caps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """Small caps: 3 connections per client address, 5 queries per connection."""
    with serve(
        tmp_path_factory.mktemp("caps"),
        tcp_max_connections_per_client=PER_CLIENT,
        tcp_max_queries=MAX_QUERIES,
    ) as handle:
        yield handle


def connect(server: ServerHandle, source: str | None = None) -> socket.socket:
    """A TCP connection to the server's DNS port (from ``source`` if given), bounded waits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    if source is not None:
        sock.bind((source, 0))
    sock.connect(server.address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection (a reset counts as closed)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def answers(stream: bytes) -> list[dns.message.Message]:
    """The framed messages in a TCP byte stream, which must end on a frame boundary."""
    out, pos = [], 0
    while pos < len(stream):
        (length,) = struct.unpack_from("!H", stream, pos)
        assert pos + 2 + length <= len(stream), "a frame cut short"
        out.append(dns.message.from_wire(stream[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return out


def answered(sock: socket.socket, qid: int = 0x4242) -> bool:
    """Whether a query on this connection gets its answer (False if the server closed it)."""
    query = dns.message.make_query("www.example.com.", "A", id=qid)
    try:
        sock.sendall(frame(query.to_wire()))
        reply, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
    except (OSError, EOFError):
        return False
    return reply.id == qid and reply.rcode() == dns.rcode.NOERROR


def closed_count(server: ServerHandle, reason: str) -> float:
    return server.metric(CLOSED, reason=reason)


def wait_closed_count(server: ServerHandle, reason: str, expected: float) -> None:
    """The server counts a connection when it has finished closing it: poll (bounded)."""
    wait_for(
        lambda: closed_count(server, reason) == expected,
        WAIT,
        f"{CLOSED}{{reason={reason}}} to reach {expected}",
    )


def wait_no_connections(server: ServerHandle) -> None:
    """Connections of earlier tests are gone on the server's side too."""
    wait_for(lambda: server.metric(OPEN) == 0, WAIT, "no TCP connections open")


def test_silent_client_is_cut_off(timers: ServerHandle) -> None:
    """A client that connects and sends nothing cannot hold a slot: the server closes it."""
    before = {r: closed_count(timers, r) for r in ("idle_timeout", "read_timeout")}
    with connect(timers) as sock:
        assert read_until_closed(sock) == b""
    wait_closed_count(timers, "idle_timeout", before["idle_timeout"] + 1)
    assert closed_count(timers, "read_timeout") == before["read_timeout"]


def test_trickling_client_is_cut_off(timers: ServerHandle) -> None:
    """A query sent a byte at a time, each byte sooner than the idle timeout, is cut off by the
    read timeout: the server closes before the query is complete and answers nothing."""
    before = {r: closed_count(timers, r) for r in ("idle_timeout", "read_timeout")}
    wire = frame(dns.message.make_query("www.example.com.", "A").to_wire())
    cut_off = False
    with connect(timers) as sock:
        for i in range(len(wire) - 1):  # never the last byte: the query never completes
            try:
                sock.sendall(wire[i : i + 1])
            except OSError:  # reset: the server closed it already
                cut_off = True
                break
            readable, _, _ = select.select([sock], [], [], 0.1)  # the pace of the trickle
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"an answer to an incomplete query: {data!r}"
                cut_off = True
                break
        if not cut_off:
            assert read_until_closed(sock) == b""
    # Had only the idle timer fired (after the trickle stopped), this would say idle_timeout.
    wait_closed_count(timers, "read_timeout", before["read_timeout"] + 1)
    assert closed_count(timers, "idle_timeout") == before["idle_timeout"]
    assert cut_off, "the server let the trickle run to its end"


def test_per_client_cap_spares_other_clients(caps: ServerHandle) -> None:
    """Over dns.tcp_max_connections_per_client from 127.0.0.1 the next connection is closed at
    once, while a client from 127.0.0.2 is still answered; a freed slot serves again."""
    wait_no_connections(caps)
    before = closed_count(caps, "max_connections_per_client")
    held = [connect(caps) for _ in range(PER_CLIENT)]
    try:
        for i, sock in enumerate(held):
            assert answered(sock, qid=i + 1), f"connection {i + 1} of {PER_CLIENT} not served"
        with connect(caps) as extra:
            assert read_until_closed(extra) == b""
        wait_closed_count(caps, "max_connections_per_client", before + 1)
        with connect(caps, source=OTHER_CLIENT) as other:
            assert other.getsockname()[0] == OTHER_CLIENT
            assert answered(other, qid=99)
        assert all(answered(sock, qid=10 + i) for i, sock in enumerate(held))
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: _new_connection_answered(caps), WAIT, "a freed slot to serve again")


def _new_connection_answered(server: ServerHandle) -> bool:
    with connect(server) as sock:
        return answered(sock)


def test_max_queries_then_close(caps: ServerHandle) -> None:
    """N+1 pipelined queries on one connection: N answers, in order, then the server closes."""
    before = closed_count(caps, "max_queries")
    queries = [
        dns.message.make_query("www.example.com.", "A", id=i) for i in range(1, MAX_QUERIES + 2)
    ]
    with connect(caps) as sock:
        sock.sendall(b"".join(frame(q.to_wire()) for q in queries))
        replies = answers(read_until_closed(sock))
    assert [r.id for r in replies] == list(range(1, MAX_QUERIES + 1))
    assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in replies)
    wait_closed_count(caps, "max_queries", before + 1)


def test_metrics_list_every_reason(caps: ServerHandle) -> None:
    """Every close reason is exported (0 until it happens) with the open connections gauge."""
    text = caps.metrics()
    for reason in (
        "client_closed",
        "idle_timeout",
        "read_timeout",
        "max_queries",
        "max_connections",
        "max_connections_per_client",
        "unanswerable",
        "internal_error",
    ):
        assert f'{CLOSED}{{reason="{reason}"}}' in text
    assert f"\n{OPEN} " in text
