"""Response rate limiting on a real `anycastedge serve`, with real UDP and TCP sockets.

Loopback is exempt by default, so these servers get an explicit ``dns.rrl`` that limits it. The
clients bind their sockets to loopback addresses in different /24s: 127.0.0.1 and 127.0.0.2 are
one client network (127.0.0.0/24), 127.0.1.1 another; 127.0.0.3 is listed as exempt.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.server import (
    REPO_ZONES,
    ServerHandle,
    minimal_pop_yaml,
    running_server,
    wait_for,
)

RATE = 5  # responses_per_second in the test servers
BURST = 200
LIMITED, SAME_NETWORK, OTHER_NETWORK, EXEMPT = "127.0.0.1", "127.0.0.2", "127.0.1.1", "127.0.0.3"
QUERIES = "anycastedge_dns_queries_total"
RRL = "anycastedge_dns_rrl_responses_total"


def rrl_settings(**overrides: object) -> dict[str, object]:
    """A dns.rrl that limits loopback (window 60 s: a limited network stays limited for the
    whole test), with one exempt address."""
    return {"rrl": {"responses_per_second": RATE, "window": 60, "slip": 2,
                    "exempt": [f"{EXEMPT}/32"], **overrides}}  # fmt: skip


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server that limits every loopback address but 127.0.0.3."""
    config = minimal_pop_yaml(tmp_path_factory.mktemp("rrl"), dns=rrl_settings())
    with running_server(REPO_ZONES, config=config) as handle:
        yield handle


@pytest.fixture(scope="module")
def log_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """The same limits in log_only mode, loopback not exempt at all."""
    settings = rrl_settings(log_only=True, exempt=[])
    config = minimal_pop_yaml(tmp_path_factory.mktemp("rrl-log-only"), dns=settings)
    with running_server(REPO_ZONES, config=config) as handle:
        yield handle


@dataclass
class Outcome:
    """What came back for a burst of UDP queries."""

    full: int  # answers with data, TC clear
    truncated: int  # TC=1, no records: the slip
    missing: int  # no reply: dropped
    seconds: float  # from the first query sent until the server had handled the last


def next_reply(sock: socket.socket) -> dns.message.Message | None:
    """One reply waiting on the non-blocking ``sock``, or None."""
    try:
        return dns.message.from_wire(sock.recv(65535))
    except BlockingIOError:
        return None


def burst(
    server: ServerHandle, source: str, count: int, qname: str, *, everything: bool = False
) -> Outcome:
    """``count`` UDP queries for ``qname`` A from ``source``, as fast as one socket sends them
    (replies read as they come, so the client's buffer never overflows). Done when the server
    has counted all of them (it counts every query it answers, limited or not); ``everything``:
    when a reply to each has come too."""
    before = server.metric(QUERIES, transport="udp")
    replies: list[dns.message.Message] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setblocking(False)
        started = time.monotonic()
        for i in range(count):
            sock.sendto(dns.message.make_query(qname, "A", id=i).to_wire(), server.address)
            while (reply := next_reply(sock)) is not None:
                replies.append(reply)
        wait_for(
            lambda: server.metric(QUERIES, transport="udp") >= before + count,
            10,
            f"the server to handle {count} queries",
        )
        seconds = time.monotonic() - started

        def drained() -> bool:
            while (reply := next_reply(sock)) is not None:
                replies.append(reply)
            return len(replies) >= count or not everything

        wait_for(drained, 10, f"{count} replies")
    truncated = [r for r in replies if r.flags & dns.flags.TC]
    for reply in truncated:
        assert not reply.answer and not reply.authority and not reply.additional, reply
        assert reply.question[0].name.to_text().lower() == qname.lower()
    full = [r for r in replies if not r.flags & dns.flags.TC]
    for reply in full:
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer, reply
    return Outcome(len(full), len(truncated), count - len(replies), seconds)


def rrl_counts(server: ServerHandle) -> dict[str, float]:
    """The limiter's counters for positive answers, by action."""
    return {
        action: server.metric(RRL, action=action, **{"class": "responses"})
        for action in ("dropped", "slipped", "would_drop", "would_slip")
    }


def test_a_burst_from_one_network_is_limited_with_every_other_one_truncated(
    limited: ServerHandle,
) -> None:
    """200 queries at once from 127.0.0.1: about a second's worth answered, the rest limited,
    half of those sent truncated (slip 2) and half dropped; /metrics counts both."""
    before = rrl_counts(limited)
    outcome = burst(limited, LIMITED, BURST, "www.example.com.")
    assert outcome.full >= 1
    assert outcome.full <= RATE * (outcome.seconds + 1) + 1
    assert outcome.truncated >= 1
    assert outcome.missing >= 1
    after = rrl_counts(limited)
    dropped = after["dropped"] - before["dropped"]
    slipped = after["slipped"] - before["slipped"]
    assert 1 <= dropped <= outcome.missing  # a reply lost on the way would be missing too
    assert slipped >= outcome.truncated
    assert abs(slipped - dropped) <= 1  # every other limited response slips
    assert dropped + slipped == BURST - outcome.full
    wait_for(
        lambda: (
            "rate limit: limiting responses to 127.0.0.0/24 for www.example.com. A"
            in limited.log_text()
        ),
        5,
        "the start of limiting in the log",
    )


def test_the_whole_network_is_limited_and_no_other(limited: ServerHandle) -> None:
    """After a burst from 127.0.0.1, 127.0.0.2 (same /24) gets no full answer for the same
    question, while 127.0.1.1 (another /24) gets all of a few."""
    burst(limited, LIMITED, BURST, "web.example.com.")
    same = burst(limited, SAME_NETWORK, 4, "web.example.com.")
    assert same.full == 0
    assert same.truncated >= 1
    other = burst(limited, OTHER_NETWORK, RATE, "web.example.com.", everything=True)
    assert (other.full, other.truncated, other.missing) == (RATE, 0, 0)


def test_an_exempt_client_is_never_limited(limited: ServerHandle) -> None:
    """127.0.0.3 is in dns.rrl.exempt: every query of a burst is answered in full, although
    its /24 is being limited."""
    burst(limited, LIMITED, BURST, "sip.example.com.")
    outcome = burst(limited, EXEMPT, BURST, "sip.example.com.", everything=True)
    assert (outcome.full, outcome.truncated, outcome.missing) == (BURST, 0, 0)


def test_tcp_is_never_limited(limited: ServerHandle) -> None:
    """A network limited over UDP still gets full answers over TCP."""
    burst(limited, LIMITED, BURST, "mail.example.com.")
    assert burst(limited, LIMITED, 4, "mail.example.com.").full == 0
    for _ in range(20):
        reply = dns.query.tcp(
            dns.message.make_query("mail.example.com.", "A"),
            limited.host, port=limited.dns_port, timeout=5, source=LIMITED,
        )  # fmt: skip
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer
        assert not reply.flags & dns.flags.TC


def test_log_only_answers_everything_and_counts(log_only: ServerHandle) -> None:
    """log_only: the whole burst is answered in full; what would have been dropped or slipped
    is counted and the start is logged."""
    before = rrl_counts(log_only)
    outcome = burst(log_only, LIMITED, BURST, "www.example.com.", everything=True)
    assert (outcome.full, outcome.truncated, outcome.missing) == (BURST, 0, 0)
    after = rrl_counts(log_only)
    would_drop = after["would_drop"] - before["would_drop"]
    would_slip = after["would_slip"] - before["would_slip"]
    assert would_drop >= 1 and abs(would_slip - would_drop) <= 1
    assert would_drop + would_slip >= BURST - RATE * (outcome.seconds + 1) - 1
    assert after["dropped"] == after["slipped"] == 0
    wait_for(
        lambda: (
            "rate limit: would limit responses to 127.0.0.0/24 for www.example.com. A"
            in log_only.log_text()
        ),
        5,
        "the would-limit line in the log",
    )


def test_loopback_is_exempt_by_default(server: ServerHandle) -> None:
    """The session's server has no dns.rrl: rate limiting is on, and loopback is exempt."""
    outcome = burst(server, LIMITED, BURST, "www.example.com.", everything=True)
    assert (outcome.full, outcome.truncated, outcome.missing) == (BURST, 0, 0)
    assert server.metric(RRL) == 0
    assert "anycastedge_dns_rrl_accounts 0.0" in server.metrics()


def test_enabled_false_turns_it_off(tmp_path: Path) -> None:
    """``enabled: false`` with the limits above and nothing exempt: a burst from loopback is
    answered in full, and there is no limiter table in /metrics."""
    config = minimal_pop_yaml(tmp_path, dns=rrl_settings(enabled=False, exempt=[]))
    with running_server(REPO_ZONES, config=config) as handle:
        outcome = burst(handle, LIMITED, BURST, "www.example.com.", everything=True)
        assert (outcome.full, outcome.truncated, outcome.missing) == (BURST, 0, 0)
        assert handle.metric(RRL) == 0
        assert "anycastedge_dns_rrl_accounts" not in handle.metrics()
