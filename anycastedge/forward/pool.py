"""A backend at run time: which endpoints may take new traffic, and which one gets it.

Pure bookkeeping, no I/O: the listeners report connects and failures, the health monitor reports
check results, and the pool keeps health, passive ejection (Envoy's outlier detection:
consecutive connect failures, or HTTP 5xx responses, eject an endpoint for base_time times the
number of its ejections, capped; never more than max_percent of the backend; a passing active
check brings it back), slow start, and the load the balancer reads.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from anycastedge.forward.balance import Balancer, Load, make_balancer
from anycastedge.forward.model import Backend, Endpoint

EWMA_WEIGHT = 0.3  # of the newest connect time in least_time's moving average


def client_key(host: str) -> bytes:
    """A client's address as the hashing balancers take it: the packed IP."""
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return host.encode()


@dataclass(slots=True)
class EndpointStats:
    """One endpoint's state and counters; kept across reloads while the endpoint stays."""

    endpoint: Endpoint
    up: bool = False  # as the active check last said; False until its first passing check
    up_since: float = float("-inf")  # when it came back up (slow start; not its first time)
    was_up: bool = False
    active: int = 0  # connections or flows now
    connect_time: float | None = None  # moving average, seconds
    failures: int = 0  # consecutive connect failures
    errors_5xx: int = 0  # consecutive HTTP responses of status 5xx
    ejected_until: float = 0.0
    ejected_for_5xx: bool = False  # the last ejection was for HTTP 5xx, not connect failures
    ejections: int = 0  # times ejected (the multiplier of base_time)
    connections: int = 0  # counters, for /metrics
    connect_failures: int = 0
    responses_5xx: int = 0
    bytes_in: int = 0  # from the client towards the endpoint
    bytes_out: int = 0


@dataclass(slots=True)
class Pool:
    """One backend's endpoints, their state, and its balancer."""

    backend: Backend
    clock: Callable[[], float]
    stats: list[EndpointStats]
    rnd: random.Random = field(default_factory=random.Random)
    refused: int = 0  # new connections or flows refused: no endpoint could take them
    _balancer: Balancer = field(init=False)
    _indexes: dict[tuple[str, int], int] = field(init=False)
    _usable: tuple[int, ...] | None = None  # None: to be worked out again
    _until: float = 0.0  # the cached usable set holds until then (an ejection or ramp ends)

    def __post_init__(self) -> None:
        self._balancer = make_balancer(self.backend, self.rnd)
        self._indexes = {s.endpoint.host_port(): i for i, s in enumerate(self.stats)}

    @classmethod
    def build(
        cls, backend: Backend, clock: Callable[[], float], previous: Pool | None = None
    ) -> Pool:
        """A pool for ``backend``, keeping the state of endpoints ``previous`` already had."""
        stats = []
        for endpoint in backend.endpoints:
            index = previous.index_of(endpoint.host_port()) if previous else None
            kept = previous.stats[index] if previous and index is not None else None
            if kept is None:
                stats.append(EndpointStats(endpoint))
            else:
                kept.endpoint = endpoint  # a new weight
                stats.append(kept)
        return cls(backend, clock, stats)

    # --- what the balancer reads

    @property
    def active(self) -> list[int]:
        """Connections (or flows) per endpoint now."""
        return [s.active for s in self.stats]

    @property
    def connect_time(self) -> list[float | None]:
        """Moving average of connect time per endpoint."""
        return [s.connect_time for s in self.stats]

    @property
    def weight(self) -> list[float]:
        """Effective weight per endpoint: its weight, ramped up during slow start."""
        now = self.clock()
        ramp = self.backend.slow_start
        out = []
        for s in self.stats:
            weight = float(s.endpoint.weight)
            if ramp and now - s.up_since < ramp:
                weight *= max(now - s.up_since, ramp / 10) / ramp
            out.append(weight)
        return out

    # --- choosing

    def usable(self) -> tuple[int, ...]:
        """Endpoints that may take new traffic: up, weighted, not ejected."""
        now = self.clock()
        if self._usable is None or now >= self._until:
            until = float("inf")
            usable = []
            for i, s in enumerate(self.stats):
                if s.ejected_until > now:
                    until = min(until, s.ejected_until)
                    continue
                if s.up and s.endpoint.weight > 0:
                    usable.append(i)
                    if self.backend.slow_start and now - s.up_since < self.backend.slow_start:
                        until = min(until, s.up_since + self.backend.slow_start)
            self._usable, self._until = tuple(usable), until
        return self._usable

    def pick(self, key: bytes, exclude: frozenset[int] = frozenset()) -> int | None:
        """The endpoint for a new connection from client ``key`` (None: none can take it)."""
        usable = self.usable()
        if exclude:
            usable = tuple(i for i in usable if i not in exclude)
        if not usable:
            return None
        load = Load(self.active, self.connect_time, self.weight)
        return self._balancer.pick(key, usable, load)

    def index_of(self, address: tuple[str, int]) -> int | None:
        """The index of the endpoint at ``address``, if this pool has one."""
        return self._indexes.get(address)

    def any_up(self) -> bool:
        """Whether some endpoint may take new traffic."""
        return bool(self.usable())

    # --- what the listeners and the health monitor report

    def connected(self, index: int, seconds: float) -> None:
        """A connect to endpoint ``index`` succeeded after ``seconds``."""
        s = self.stats[index]
        s.failures = 0
        s.connections += 1
        old = s.connect_time
        s.connect_time = seconds if old is None else old + EWMA_WEIGHT * (seconds - old)

    def connect_failed(self, index: int) -> None:
        """A connect to endpoint ``index`` failed: eject it after enough in a row."""
        s = self.stats[index]
        s.failures += 1
        s.connect_failures += 1
        if self._eject(s, s.failures, self.backend.ejection.consecutive_failures):
            s.failures = 0
            s.ejected_for_5xx = False

    def responded(self, index: int, status: int) -> None:
        """Endpoint ``index`` answered an HTTP request with ``status``: a burst of 5xx in a row
        ejects it (Envoy's consecutive_5xx)."""
        s = self.stats[index]
        if status < 500:
            s.errors_5xx = 0
            return
        s.errors_5xx += 1
        s.responses_5xx += 1
        if self._eject(s, s.errors_5xx, self.backend.ejection.consecutive_5xx):
            s.errors_5xx = 0
            s.ejected_for_5xx = True

    def _eject(self, s: EndpointStats, count: int, limit: int) -> bool:
        """Eject ``s`` if ``count`` reached ``limit`` (0: never) and the backend allows it."""
        if not limit or count < limit:
            return False
        rule = self.backend.ejection
        now = self.clock()
        if s.ejected_until > now:
            return False
        ejected = sum(1 for o in self.stats if o.ejected_until > now)
        if (ejected + 1) * 100 > rule.max_percent * len(self.stats):
            return False  # ejecting it too would leave less of the backend than allowed
        s.ejections += 1
        s.ejected_until = now + min(rule.base_time * s.ejections, rule.max_time)
        self._usable = None
        return True

    def check_result(self, index: int, ok: bool, serving: bool) -> None:
        """An active check of endpoint ``index`` passed (``ok``) or not; ``serving``: its state
        after rise and fall."""
        s = self.stats[index]
        # A passing active check brings an ejected endpoint back; for 5xx only an HTTP check
        # says anything (a TCP connect succeeds while every answer is a 500).
        http_check = self.backend.healthcheck.protocol == "HTTP"
        if ok and s.ejected_until and (http_check or not s.ejected_for_5xx):
            s.ejected_until = 0.0
            self._usable = None
        if serving != s.up:
            s.up = serving
            if serving and s.was_up:
                s.up_since = self.clock()  # back after being down: slow start
            s.was_up = s.was_up or serving
            self._usable = None

    def is_ejected(self, index: int) -> bool:
        """Whether endpoint ``index`` is ejected now."""
        return self.stats[index].ejected_until > self.clock()
