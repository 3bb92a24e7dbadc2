"""`pop verify`'s network side: ask every POP the planned questions with dnspython, concurrently
and bounded. Queries go only to the addresses the operator gave (``control.verify`` compares)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query

from anycastedge.control.verify import (
    AnycastResult,
    Pop,
    Question,
    Summary,
    ZonePlan,
    anycast_result,
    failed,
    summarize,
)
from anycastedge.dns.wire import OPT_NSID

DEFAULT_TIMEOUT = 2.0
TRIES = 2  # UDP attempts per question: one lost datagram is not drift
PARALLEL = 16  # queries in flight at once, over all POPs
PAYLOAD = 1232  # the EDNS buffer size of DNS Flag Day 2020: no fragmented UDP replies


def query(
    host: str, port: int, question: Question, timeout: float, tries: int = TRIES, nsid: bool = False
) -> dns.message.Message:
    """Ask ``host``:``port`` one question without recursion: UDP with EDNS, TCP if truncated.

    Retries over UDP only on a timeout; raises the last error (``dns.exception.Timeout``, OSError,
    a DNSException for a reply that does not parse or does not match).
    """
    options: list[dns.edns.Option] = (
        [dns.edns.GenericOption(dns.edns.OptionType.make(OPT_NSID), b"")] if nsid else []
    )
    message = dns.message.make_query(
        question.qname, question.qtype, use_edns=0, payload=PAYLOAD, options=options
    )
    message.flags &= ~dns.flags.RD  # as dig +norec: an authoritative server's own answer
    for attempt in range(tries):
        try:
            reply, _tcp = dns.query.udp_with_fallback(message, host, timeout=timeout, port=port)
            return reply
        except dns.exception.Timeout:
            if attempt + 1 == tries:
                raise
    raise dns.exception.Timeout  # tries < 1: nothing was sent


def failure_text(exc: BaseException) -> str:
    """A short reason for a question that got no reply."""
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return f"bad reply: {type(exc).__name__}: {exc}"


def ask(pop: Pop, question: Question, timeout: float, tries: int = TRIES) -> Summary:
    """``pop``'s answer to ``question`` as a summary; a failure is a summary too, never raised."""
    try:
        return summarize(query(pop.host, pop.port, question, timeout, tries))
    except (dns.exception.DNSException, OSError) as exc:
        return failed(failure_text(exc))


Asker = Callable[[Pop, Question], Summary]


def ask_all(
    pops: Sequence[Pop], plans: Sequence[ZonePlan], asker: Asker, parallel: int = PARALLEL
) -> dict[tuple[str, Question], Summary]:
    """Every POP's answer to every planned question, by (POP name, question).

    The SOA questions go first; a POP that gives no answer to a zone's SOA (timeout, REFUSED,
    SERVFAIL) is not asked the rest of that zone: its SOA row already says so, and each other
    question would only wait out the timeout, or be refused, to say the same.
    """
    answers: dict[tuple[str, Question], Summary] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:

        def run(jobs: list[tuple[Pop, Question]]) -> None:
            for (pop, question), summary in zip(
                jobs, pool.map(lambda job: asker(*job), jobs), strict=True
            ):
                answers[(pop.name, question)] = summary

        run([(pop, plan.soa) for plan in plans for pop in pops])
        run(
            [
                (pop, question)
                for plan in plans
                for question in plan.questions[1:]
                for pop in pops
                if not answers[(pop.name, plan.soa)].failure
            ]
        )
    return answers


def ask_anycast(
    host: str, port: int, zone: str, timeout: float, tries: int = TRIES
) -> AnycastResult:
    """Which POP answers ``zone``'s SOA at an anycast address, by the NSID it puts in the reply."""
    try:
        reply = query(host, port, Question(zone, "SOA"), timeout, tries, nsid=True)
    except (dns.exception.DNSException, OSError) as exc:
        return AnycastResult(host, port, failure=failure_text(exc))
    return anycast_result(host, port, reply)
