"""The balancers: which usable endpoint of a backend takes a new connection. Pure, no I/O.

Endpoints are named by their index in ``Backend.endpoints``. The caller passes, for every pick,
the sorted indices that may take new traffic (``usable``: up and not ejected) and a `Load` view of
its own per-endpoint counters. A balancer keeps only its own small state (a round-robin cursor,
smooth-WRR credits, cached Maglev tables), so one balancer serves one backend.

Weights: every algorithm reads the *effective* weight (`Load.weight`, which slow start lowers for
a returning endpoint); an endpoint whose effective weight is 0 or less is drained and never picked.
``round_robin`` ignores weights otherwise. ``maglev`` shares its table by the *configured* weights
(`Endpoint.weight`): a ramping effective weight would rebuild the table, and move clients, on every
step of a slow start; for it an effective weight only counts as drained or not.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import random
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from anycastedge.forward.model import BALANCE_ALGORITHMS, MAGLEV_TABLE_SIZE, Backend

_MASK64 = (1 << 64) - 1
_MAGLEV_CACHE = 4  # tables kept per balancer: a flapping endpoint toggles between two sets


@dataclass(frozen=True, slots=True, eq=False)
class Load:
    """What balancers read of each endpoint, by index: views of the caller's lists.

    The caller keeps the lists and updates them in place, so one `Load` serves every pick.
    """

    active: Sequence[int]  # connections open now
    connect_time: Sequence[float | None]  # moving average of connect time, seconds; None: no sample
    weight: Sequence[float]  # effective weight: configured, lowered by slow start; <= 0: drained

    @classmethod
    def idle(cls, backend: Backend) -> Load:
        """No connections, no samples, the configured weights: a fresh backend."""
        n = len(backend.endpoints)
        return cls([0] * n, [None] * n, [float(e.weight) for e in backend.endpoints])


class Balancer(Protocol):
    """Chooses the endpoint for a new connection."""

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The index of the chosen endpoint, None when no usable endpoint has weight.

        ``key`` is the client (its packed address), which only the hashing algorithms read.
        """
        ...


def make_balancer(backend: Backend, rnd: random.Random | None = None) -> Balancer:
    """A new balancer for ``backend``'s algorithm; ``rnd`` drives ``p2c`` (seed it in tests)."""
    algorithm = backend.balance
    if algorithm == "round_robin":
        return RoundRobin()
    if algorithm == "weighted":
        return SmoothWeighted(len(backend.endpoints))
    if algorithm == "least_conn":
        return LeastConn()
    if algorithm == "p2c":
        return PowerOfTwoChoices(rnd if rnd is not None else random.Random())
    if algorithm == "least_time":
        return LeastTime()
    if algorithm == "source_hash":
        return SourceHash(tuple(str(e) for e in backend.endpoints))
    if algorithm == "maglev":
        return Maglev(
            tuple(str(e) for e in backend.endpoints),
            tuple(e.weight for e in backend.endpoints),
            backend.maglev_table_size,
        )
    raise ValueError(f"unknown balance algorithm {algorithm!r} (one of {BALANCE_ALGORITHMS})")


class RoundRobin:
    """Each usable endpoint in turn, in index order; weights ignored except that 0 is drained.

    The cursor is the last endpoint picked, not a position in ``usable``, so an endpoint joining
    or leaving does not make the others skip or repeat a turn.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -1

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The next usable endpoint after the last one picked."""
        n = len(usable)
        weight = load.weight
        start = bisect.bisect_right(usable, self._last)
        for k in range(start, start + n):
            i = usable[k - n if k >= n else k]
            if weight[i] > 0:
                self._last = i
                return i
        return None


class SmoothWeighted:
    """nginx's smooth weighted round robin: picks interleave, and over any run of sum(w) picks
    (integer weights, usable set unchanged) each endpoint is picked exactly w times.

    Every pick adds each endpoint's effective weight to its credit, picks the highest credit
    (the first in index order on a tie) and takes the total weight from the winner. Credits
    restart at 0 when the usable set changes, so a returning endpoint brings back no old debt.
    """

    __slots__ = ("_current", "_usable")

    def __init__(self, endpoints: int) -> None:
        self._current = [0.0] * endpoints
        self._usable: tuple[int, ...] = ()

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The endpoint with the highest credit."""
        current = self._current
        if usable is not self._usable:
            members = tuple(usable)  # no copy when the caller passes a tuple
            if members != self._usable:
                for i in range(len(current)):
                    current[i] = 0.0
            self._usable = members
        weight = load.weight
        total = 0.0
        best = -1
        best_credit = -math.inf
        for i in usable:
            w = weight[i]
            if w <= 0:
                continue
            credit = current[i] + w
            current[i] = credit
            total += w
            if credit > best_credit:
                best, best_credit = i, credit
        if best < 0:
            return None
        current[best] -= total
        return best


class _Rotating:
    """The lowest-scored usable endpoint, looking from the one after the last pick: a tie goes
    to the earliest in that rotation, so equal endpoints take turns."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -1

    def _lowest(
        self, usable: Sequence[int], load: Load, score: Callable[[int, float], Any]
    ) -> int | None:
        n = len(usable)
        weight = load.weight
        best = -1
        best_score: Any = None
        start = bisect.bisect_right(usable, self._last)
        for k in range(start, start + n):
            i = usable[k - n if k >= n else k]
            w = weight[i]
            if w <= 0:
                continue
            value = score(i, w)
            if best < 0 or value < best_score:  # strict: the earliest in rotation keeps a tie
                best, best_score = i, value
        if best >= 0:
            self._last = best
            return best
        return None


class LeastConn(_Rotating):
    """Fewest active connections per unit of effective weight; ties in round-robin order.

    Ties matter for an idle backend (every endpoint at 0): they then take turns, weights aside.
    """

    __slots__ = ()

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The endpoint with the lowest active/weight, the first after the last pick on a tie."""
        active = load.active
        return self._lowest(usable, load, lambda i, w: active[i] / w)


class LeastTime(_Rotating):
    """Lowest expected connect wait: endpoints with no sample yet first, then the lowest
    ``connect_time * (active + 1) / weight``; ties in round-robin order.

    The average alone would send every new connection to the fastest endpoint until its average
    rose (a herd); scaling it by the connections the endpoint would carry with this one, per unit
    of weight, spreads load as NGINX Plus's ``least_time`` does (average time and active
    connections, weighted). Idle endpoints of equal weight are ranked by their average alone; an
    endpoint of weight 2 is preferred until its time-load is twice another's. Among endpoints
    without a sample the fewest active per weight goes first, so they are probed in turn.
    """

    __slots__ = ()

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The unsampled or fastest endpoint, as the class describes."""
        active, times = load.active, load.connect_time

        def score(i: int, w: float) -> tuple[int, float]:
            t = times[i]
            if t is None:
                return 0, active[i] / w
            return 1, t * (active[i] + 1) / w

        return self._lowest(usable, load, score)


class PowerOfTwoChoices:
    """Power of two random choices: two distinct usable endpoints drawn at random (in proportion
    to effective weight), the one with fewer active connections per unit of weight wins (the
    first drawn on a tie). A single usable endpoint is picked alone.
    """

    __slots__ = ("_rnd",)

    def __init__(self, rnd: random.Random) -> None:
        self._rnd = rnd

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The less loaded of two random draws."""
        weight = load.weight
        total = 0.0
        count = 0
        only = -1
        uniform = True
        first_weight = 0.0
        for i in usable:
            w = weight[i]
            if w <= 0:
                continue
            if count == 0:
                first_weight, only = w, i
            elif w != first_weight:
                uniform = False
            count += 1
            total += w
        if count <= 1:
            return only if count else None
        rnd = self._rnd
        n = len(usable)
        if uniform and count == n:
            # Equal weights, none drained: two indices in O(1).
            a = rnd.randrange(n)
            b = rnd.randrange(n - 1)
            first, second = usable[a], usable[b + 1 if b >= a else b]
        else:
            first = self._draw(usable, weight, total, -1)
            second = self._draw(usable, weight, total - weight[first], first)
        active = load.active
        # Cross-multiplied active/weight: no division, exact for integer counts.
        if active[second] * weight[first] < active[first] * weight[second]:
            return second
        return first

    def _draw(self, usable: Sequence[int], weight: Sequence[float], total: float, skip: int) -> int:
        """One endpoint drawn in proportion to weight, ``skip`` left out (``total`` excludes it)."""
        r = self._rnd.random() * total
        last = -1
        for i in usable:
            w = weight[i]
            if w <= 0 or i == skip:
                continue
            last = i
            r -= w
            if r < 0:
                return i
        return last  # float rounding left r at 0 past the end: the last candidate


class SourceHash:
    """The client key hashed onto the endpoints by weighted rendezvous (highest random weight).

    Each endpoint scores ``w / -ln(u)``, ``u`` a uniform hash of (key, endpoint) in (0, 1); the
    highest wins, which gives each endpoint a share of clients proportional to its effective
    weight. A client stays put while the usable set and weights hold; removing an endpoint moves
    only its clients, and raising one's weight (slow start) only draws clients to it.
    """

    __slots__ = ("_seeds",)

    def __init__(self, names: Sequence[str]) -> None:
        self._seeds = tuple(stable_hash(name.encode(), b"rendezvous") for name in names)

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The endpoint with the highest score for ``key``."""
        weight = load.weight
        seeds = self._seeds
        client = stable_hash(key, b"source")
        best = -1
        best_score = 0.0
        for i in usable:
            w = weight[i]
            if w <= 0:
                continue
            # The top 52 bits plus a half: strictly inside (0, 1), exact in a double.
            u = ((_mix64(client ^ seeds[i]) >> 12) + 0.5) * 2.0**-52
            score = w / -math.log(u)
            if score > best_score:
                best, best_score = i, score
        return best if best >= 0 else None


class Maglev:
    """Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup of ``key`` in a table of
    prime size built by `maglev_table` over the usable endpoints with configured weight.

    Tables are cached per set (the last few), so a pick with an unchanged set is one hash and
    one index; passing the same ``usable`` tuple object makes the check O(1). An endpoint drained
    at run time (effective weight 0) keeps its slots in the table and its clients go by the table
    built without the drained endpoints, so draining moves only the drained endpoint's clients.
    """

    __slots__ = ("_names", "_weights", "_size", "_tables", "_usable", "_table", "_members")

    def __init__(self, names: Sequence[str], weights: Sequence[int], size: int) -> None:
        if not is_prime(size):
            raise ValueError(f"maglev table size {size} is not a prime")
        if size < len(names):
            raise ValueError(f"maglev table size {size} is below the {len(names)} endpoints")
        self._names = tuple(names)
        self._weights = tuple(weights)
        self._size = size
        self._tables: OrderedDict[tuple[int, ...], array[int] | None] = OrderedDict()
        self._usable: tuple[int, ...] = ()
        self._members: tuple[int, ...] = ()
        self._table: array[int] | None = None

    def pick(self, key: bytes, usable: Sequence[int], load: Load) -> int | None:
        """The endpoint at the client's slot."""
        if usable is not self._usable:
            members = tuple(usable)
            if members != self._usable:
                self._members = tuple(i for i in members if self._weights[i] > 0)
                self._table = self._table_for(self._members)
            self._usable = members
        table = self._table
        if table is None:
            return None
        slot = stable_hash(key, b"maglev") % self._size
        chosen = table[slot]
        weight = load.weight
        if weight[chosen] > 0:
            return chosen
        live = tuple(i for i in self._members if weight[i] > 0)  # rare: a drained endpoint's slot
        fallback = self._table_for(live)
        return None if fallback is None else fallback[slot]

    def _table_for(self, members: tuple[int, ...]) -> array[int] | None:
        """The table over ``members`` (endpoint indices), from the cache or built."""
        if members in self._tables:
            self._tables.move_to_end(members)
            return self._tables[members]
        table: array[int] | None = None
        if members:
            positions = maglev_table(
                [self._names[i] for i in members], [self._weights[i] for i in members], self._size
            )
            table = array("I", [members[p] for p in positions])
        self._tables[members] = table
        if len(self._tables) > _MAGLEV_CACHE:
            self._tables.popitem(last=False)
        return table


def maglev_table(
    names: Sequence[str], weights: Sequence[int], size: int = MAGLEV_TABLE_SIZE
) -> array[int]:
    """The Maglev lookup table: for each of ``size`` slots, the position in ``names`` owning it.

    Each name has a permutation of the slots, ``(offset + j * skip) % size`` with offset and skip
    from two hashes of the name (``size`` prime makes every skip a full cycle). Names take turns
    claiming their next free slot. Weighted fill: each name's number of slots is fixed first,
    ``size * w / sum(w)`` rounded down and the leftover slots to the largest remainders
    (Hamilton's method), so every share is within one slot of exact (strictly less than one);
    turns are interleaved by stride scheduling (name p's k-th turn at virtual time
    ``(k + 1/2) / w_p``) and a name stops taking turns at its quota. With equal weights this is
    the paper's round-robin fill.
    """
    n = len(names)
    if n == 0 or len(weights) != n or any(w <= 0 for w in weights):
        raise ValueError("maglev_table needs names with positive weights")
    total = sum(weights)
    quota = [size * w // total for w in weights]
    leftover = size - sum(quota)
    by_remainder = sorted(range(n), key=lambda p: (-(size * weights[p] % total), p))
    for p in by_remainder[:leftover]:
        quota[p] += 1

    position = []
    skip = []
    for name in names:
        data = name.encode()
        position.append(stable_hash(data, b"maglev-offset") % size)
        skip.append(stable_hash(data, b"maglev-skip") % (size - 1) + 1)

    entry = [-1] * size
    turns = [(0.5 / weights[p], p) for p in range(n) if quota[p] > 0]
    heapq.heapify(turns)
    taken = [0] * n
    while turns:
        when, p = turns[0]
        c = position[p]
        step = skip[p]
        while entry[c] >= 0:
            c += step
            if c >= size:
                c -= size
        entry[c] = p
        c += step
        position[p] = c - size if c >= size else c
        taken[p] += 1
        if taken[p] < quota[p]:
            heapq.heapreplace(turns, (when + 1.0 / weights[p], p))
        else:
            heapq.heappop(turns)
    return array("I", entry)


def stable_hash(data: bytes, domain: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process (unlike ``hash()``); ``domain``
    (up to 16 bytes) separates the uses."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=domain).digest(), "big")


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers with full avalanche."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def is_prime(n: int) -> bool:
    """Trial division: table sizes are at most a few million."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True
