"""Answer selection for dynamic records: rule matching, health, fallback, weights, stickiness."""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from anycastedge.gslb.geo import Client, GeoLocator, needed_prefix
from anycastedge.gslb.model import DOWN, UP, DynamicRecord, PoolValue
from anycastedge.health.check import CheckTarget

DEFAULT_POOL = "values"  # the label of answers from the record's own values


def match(record: DynamicRecord, client: Client, locator: GeoLocator) -> tuple[str, int]:
    """The pool of the first rule the client matches, and the prefix that decision holds for.

    The prefix only counts the rules examined: a later rule cannot change the outcome.
    """
    scope = 0
    located: tuple[tuple[str, ...], int] | None = None
    bits = client.bits
    for rule in record.rules:
        if rule.catch_all:
            return rule.pool, scope
        hit = False
        for net in rule.subnets:
            if net.version != client.version:
                continue
            needed, inside = needed_prefix(
                client.address, bits, int(net.network_address), net.prefixlen
            )
            scope = max(scope, needed)
            hit = hit or inside
        if rule.geos:
            if located is None:
                located = locator.locate(client)
            codes, geo_scope = located
            scope = max(scope, geo_scope)
            hit = hit or any(code in codes for code in rule.geos)
        if hit:
            return rule.pool, scope
    return DEFAULT_POOL, scope  # unreachable for valid records: the last rule is a catch-all


def healthy(
    record: DynamicRecord, pool: str, serving: Callable[[CheckTarget], bool]
) -> tuple[str, tuple[PoolValue, ...]]:
    """The first pool along the fallback chain with values up, and those values.

    ``(DEFAULT_POOL, ())`` when the whole chain is down: the record's own values answer.
    """
    seen: set[str] = set()
    name: str | None = pool
    while name is not None and name not in seen and name in record.pools:
        seen.add(name)
        current = record.pools[name]
        up = tuple(v for v in current.values if is_up(v, serving))
        if up:
            return name, up
        name = current.fallback
    return DEFAULT_POOL, ()


def is_up(value: PoolValue, serving: Callable[[CheckTarget], bool]) -> bool:
    """``up`` and ``down`` force; ``obey`` follows the checks (an unchecked value counts as up)."""
    if value.status == UP:
        return True
    if value.status == DOWN:
        return False
    return value.target is None or serving(value.target)


@dataclass(frozen=True, slots=True)
class Choice:
    """The values one pool can answer with right now, ready for a fast weighted draw."""

    pool: str
    values: tuple[str, ...]
    weights: tuple[int, ...]
    cumulative: tuple[int, ...]
    count: int  # values per answer

    @property
    def fixed(self) -> tuple[str, ...] | None:
        """The one possible answer when no draw is needed (all values fit, or only one)."""
        return self.values if len(self.values) <= self.count else None


def make_choice(record: DynamicRecord, pool: str, values: Sequence[PoolValue]) -> Choice:
    """A Choice over ``values``; the record's own values (unweighted, all answered) if empty."""
    if not values:
        n = len(record.values)
        return Choice(pool, record.values, (1,) * n, tuple(range(1, n + 1)), max(n, 1))
    weights = tuple(v.weight for v in values)
    cumulative = []
    total = 0
    for w in weights:
        total += w
        cumulative.append(total)
    return Choice(pool, tuple(v.value for v in values), weights, tuple(cumulative), record.answers)


def draw(choice: Choice, rnd: random.Random) -> tuple[str, ...]:
    """A weighted random answer of ``choice.count`` distinct values."""
    fixed = choice.fixed
    if fixed is not None:
        return fixed
    if choice.count == 1:
        at = bisect.bisect_right(choice.cumulative, rnd.random() * choice.cumulative[-1])
        return (choice.values[min(at, len(choice.values) - 1)],)
    # Efraimidis-Spirakis: weighted sampling without replacement in one pass.
    keys = [rnd.random() ** (1.0 / w) for w in choice.weights]
    order = sorted(range(len(keys)), key=keys.__getitem__, reverse=True)
    return tuple(choice.values[i] for i in sorted(order[: choice.count]))


def sticky(choice: Choice, key: bytes) -> tuple[str, ...]:
    """The answer for the client network ``key``: weighted rendezvous hashing.

    Each value scores -ln(u)/weight with u a hash of (key, value); the lowest scores win. Removing
    a value moves only the clients that had it; adding one takes only the clients it now wins.
    The hash is keyed on content, not on the process, so every POP gives the same answer.
    """
    fixed = choice.fixed
    if fixed is not None:
        return fixed
    scored = []
    for value, weight in zip(choice.values, choice.weights, strict=True):
        digest = hashlib.blake2b(key + b"\0" + value.encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 1) / 2.0**64  # in (0, 1]
        scored.append((-math.log(u) / weight, value))
    scored.sort()
    winners = {value for _, value in scored[: choice.count]}
    return tuple(v for v in choice.values if v in winners)


def sticky_key(record: DynamicRecord, client: Client) -> bytes:
    """The client's network at the record's sticky prefix, as bytes."""
    prefix = record.sticky_prefix.ipv4 if client.version == 4 else record.sticky_prefix.ipv6
    prefix = min(prefix, client.prefix)
    bits = client.bits
    network = client.address >> (bits - prefix) << (bits - prefix) if prefix else 0
    return bytes((client.version, prefix)) + network.to_bytes(bits // 8, "big")


def every_pool_down(record: DynamicRecord, serving: Callable[[CheckTarget], bool]) -> bool:
    """Whether no value of any pool may be answered: the record's own values answer then."""
    return not any(is_up(v, serving) for pool in record.pools.values() for v in pool.values)
