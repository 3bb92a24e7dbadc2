"""DNS workers without processes: the link's messages, serve's bookkeeping of its workers
(reload answers, health versions, counters across restarts) and a worker's side of the link."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from anycastedge.dns import workers
from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.service import ReloadLog, ReloadResult
from anycastedge.dns.workers import (
    Channel,
    DnsWorkers,
    Health,
    HealthApplied,
    HealthTable,
    Loaded,
    ParentLink,
    Reload,
    Session,
    encode,
    receive_blocking,
    send_blocking,
)
from anycastedge.dns.zone import ZoneSet
from anycastedge.health.check import CheckTarget, HealthCheck
from anycastedge.statedir.serials import ServedSerial

TARGET = CheckTarget("127.0.0.11", HealthCheck(protocol="TCP", port=8080))
OTHER = CheckTarget("127.0.0.12", HealthCheck(protocol="TCP", port=8080))
SERIALS = {"example.com.": ServedSerial("d" * 64, 7)}


def ok(trigger: str = "SIGHUP") -> ReloadResult:
    return ReloadResult(time.time(), True, trigger)


def failed() -> ReloadResult:
    return ReloadResult(time.time(), False, "SIGHUP", ("z.yaml, line 3: bad",))


class Sent:
    """A channel that keeps what is sent on it."""

    def __init__(self) -> None:
        self.messages: list[object] = []

    def send(self, message: object) -> None:
        self.messages.append(message)


class Zones:
    """What DnsWorkers and ParentLink read of a zone service, and a reload the test finishes."""

    def __init__(self) -> None:
        self.serials = dict(SERIALS)
        self.reloads = ReloadLog()
        self.zones = ZoneSet({})
        self.calls: list[tuple[str, Any, Deferred[bool]]] = []
        self.responder = self
        self.health_changes = 0

    def reload(self, trigger: str, serials: Any = None) -> Deferred[bool]:
        done: Deferred[bool] = Deferred()
        self.calls.append((trigger, serials, done))
        return done

    def health_changed(self) -> None:
        self.health_changes += 1


# --- the link's messages -------------------------------------------------------------------------


def test_messages_cross_a_socketpair_whole() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        big = DnsCounters(responses={("z", "A", "NOERROR", str(i)): i for i in range(50_000)})
        hello = Loaded(3, ok(), {"example.com.": 7})
        for message in (hello, big):
            # Sent from a thread of its own: a message bigger than the socket buffer blocks.
            sender = threading.Thread(target=send_blocking, args=(mine, message))
            sender.start()
            assert receive_blocking(theirs, 30) == message
            sender.join(30)
        with pytest.raises(TimeoutError):
            receive_blocking(theirs, 0.05)
        mine.close()
        with pytest.raises(OSError, match="closed"):
            receive_blocking(theirs, 5)


def test_an_oversized_length_is_refused() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        mine.sendall((workers.MAX_MESSAGE + 1).to_bytes(4, "big"))
        with pytest.raises(OSError, match="over"):
            receive_blocking(theirs, 5)


def test_the_channel_frames_and_unframes() -> None:
    received: list[object] = []
    lost: list[bool] = []
    channel = Channel(received.append, lambda: lost.append(True))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.send(Health(1, {TARGET: False}))
    assert transport.value() == encode(Health(1, {TARGET: False}))
    both = encode(HealthApplied(1)) + encode(Reload(2, "SIGHUP", SERIALS))
    for i in range(len(both)):  # in any pieces
        channel.dataReceived(both[i : i + 1])
    assert received == [HealthApplied(1), Reload(2, "SIGHUP", SERIALS)]
    channel.dataReceived(len(b"garbage").to_bytes(4, "big") + b"garbage")
    assert transport.disconnecting and received == [HealthApplied(1), Reload(2, "SIGHUP", SERIALS)]
    channel.connectionLost(None)
    assert lost == [True]


# --- serve's side --------------------------------------------------------------------------------


def supervisor(count: int = 3) -> tuple[DnsWorkers, Clock, Zones, dict[CheckTarget, bool]]:
    clock, zones = Clock(), Zones()
    health = {TARGET: True}
    sup = DnsWorkers(count, (), lambda i, fds, link: [], clock, zones, DnsCounters(),  # type: ignore[arg-type]
                     None, lambda: health, lambda: None, None)  # fmt: skip
    for index, link in sup.links.items():
        link.session = Session(1000 + index)
        link.session.channel = Sent()  # type: ignore[assignment]
    return sup, clock, zones, health


def sent(sup: DnsWorkers, index: int) -> list[object]:
    session = sup.links[index].session
    assert session is not None
    return session.channel.messages  # type: ignore[union-attr]


def report(sup: DnsWorkers, index: int, message: object) -> None:
    link = sup.links[index]
    assert link.session is not None
    sup._received(link, link.session, message)


def test_a_reload_is_passed_on_and_answered_once_every_worker_has() -> None:
    sup, _, zones, _ = supervisor()
    zones.reloads.add(ok("control"))
    sup.swapped()
    assert sent(sup, 1) == sent(sup, 2) == [Reload(1, "control", SERIALS)]
    answered: list[bool] = []
    sup.settled().addCallback(answered.append)
    report(sup, 1, Loaded(0, ok(), {}))  # an older generation's answer does not count
    report(sup, 1, Loaded(1, ok(), {}))
    assert answered == []
    report(sup, 2, Loaded(1, ok(), {}))
    assert answered == [True]

    sup.swapped()
    sup.settled().addCallback(answered.append)
    report(sup, 1, Loaded(2, failed(), {}))
    assert answered == [True]  # worker 2 has not answered yet
    report(sup, 2, Loaded(2, ok(), {}))
    assert answered == [True, False]
    entries = sup.processes()
    assert [e["last_reload"]["ok"] for e in entries[1:]] == [False, True]
    assert entries[1]["last_reload"]["problems"] == ["z.yaml, line 3: bad"]


def test_a_worker_left_down_holds_no_reload_up_and_a_silent_one_times_out() -> None:
    sup, clock, _, _ = supervisor()
    sup.swapped()
    answered: list[bool] = []
    sup.settled().addCallback(answered.append)
    report(sup, 1, Loaded(1, ok(), {}))
    sup.workers[1].given_up = True  # worker 2
    sup._settle()
    assert answered == [True]

    sup.swapped()
    assert not sup.workers[1].given_up  # serve's reload gives it its restarts again
    sup.settled().addCallback(answered.append)
    clock.advance(workers.RELOAD_WAIT - 1)
    assert answered == [True]
    clock.advance(1)
    assert answered == [True, False]
    assert clock.getDelayedCalls() == []


def test_health_goes_out_only_when_it_changed_with_a_new_version() -> None:
    sup, _, _, health = supervisor(2)
    sup.health_changed()
    sup.health_changed()  # nothing changed since
    health[TARGET] = False
    sup.health_changed()
    assert sent(sup, 1) == [Health(1, {TARGET: True}), Health(2, {TARGET: False})]
    report(sup, 1, HealthApplied(2))
    assert [e["health_version"] for e in sup.processes()] == [2, 2]


def test_counters_add_up_and_never_go_down_across_restarts() -> None:
    sup, _, _, _ = supervisor(2)
    sup.own.responses[("z", "A", "NOERROR", "udp")] = 5
    link = sup.links[1]
    first = link.session
    assert first is not None
    report(sup, 1, DnsCounters(responses={("z", "A", "NOERROR", "udp"): 7}, internal_errors=1))
    assert sup.totals().responses == {("z", "A", "NOERROR", "udp"): 12}
    sup._lost(link, first)  # the process exited: its last snapshot stays counted
    assert link.session is None and sup.totals().responses[("z", "A", "NOERROR", "udp")] == 12
    link.session = Session(2000)
    report(sup, 1, DnsCounters(responses={("z", "A", "NOERROR", "tcp"): 2}))
    totals = sup.totals()
    assert totals.responses == {("z", "A", "NOERROR", "udp"): 12, ("z", "A", "NOERROR", "tcp"): 2}
    assert totals.internal_errors == 1
    assert [e["queries"] for e in sup.processes()] == [5, 9]
    sup._lost(link, first)  # a late notice of the old process changes nothing
    assert sup.totals() == totals and link.session is not None


# --- a worker's side -----------------------------------------------------------------------------


def parent_link() -> tuple[ParentLink, Zones, Sent, HealthTable]:
    zones = Zones()
    table = HealthTable(Health(0, {}))
    link = ParentLink(None, zones, table, DnsCounters(), Clock(), 0, lambda: None)  # type: ignore[arg-type]
    channel = Sent()
    link.channel = channel  # type: ignore[assignment]
    return link, zones, channel, table


def test_reloads_run_one_at_a_time_the_latest_next() -> None:
    link, zones, channel, _ = parent_link()
    link._received(Reload(1, "SIGHUP", {"a.": ServedSerial("x", 1)}))
    link._received(Reload(2, "SIGHUP", {"a.": ServedSerial("x", 2)}))
    link._received(Reload(3, "control", {"a.": ServedSerial("x", 3)}))
    assert [(t, s) for t, s, _ in zones.calls] == [("SIGHUP", {"a.": ServedSerial("x", 1)})]
    zones.reloads.add(ok())
    zones.calls[0][2].callback(True)
    # Reload 2 was replaced by 3, run with 3's serials.
    assert [(t, s) for t, s, _ in zones.calls[1:]] == [("control", {"a.": ServedSerial("x", 3)})]
    zones.reloads.add(failed())
    zones.calls[1][2].callback(False)
    loaded = [m for m in channel.messages if isinstance(m, Loaded)]
    assert [(m.generation, m.result.ok) for m in loaded] == [(1, True), (3, False)]
    assert len(zones.calls) == 2


def test_health_from_serve_is_followed_and_acknowledged() -> None:
    link, zones, channel, table = parent_link()
    assert table.serving(TARGET)  # unknown to serve: up, as serve counts it
    link._received(Health(1, {TARGET: False, OTHER: True}))
    assert not table.serving(TARGET) and table.serving(OTHER)
    assert zones.health_changes == 1  # the answers of the old health are dropped
    link._received(Health(2, {TARGET: False, OTHER: True}))
    assert zones.health_changes == 1  # same map: nothing to drop
    assert channel.messages == [HealthApplied(1), HealthApplied(2)]
