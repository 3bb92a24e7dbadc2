"""Per-query GSLB decisions with the caches that keep them off the slow path.

Three caches, all bounded: which pool a client network goes to (independent of health), what each
pool can answer with (cleared when any health changes), and sticky answers (cleared likewise).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from anycastedge.gslb.geo import Client, GeoLocator, client_from_ecs, client_from_host
from anycastedge.gslb.model import DynamicRecord
from anycastedge.gslb.select import Choice, draw, healthy, make_choice, match, sticky, sticky_key
from anycastedge.health.check import CheckTarget

# selection, pool answered from, ECS scope, whether every query of this client gets it
Decision = tuple[tuple[str, ...], str, int, bool]


class Decider:
    """Decides dynamic answers for clients, from a locator and a view of the health checks."""

    __slots__ = (
        "locator", "serving", "limit", "_rnd", "_matches", "_regions", "_region_count",
        "_choices", "_sticky",
    )  # fmt: skip

    def __init__(
        self,
        locator: GeoLocator,
        serving: Callable[[CheckTarget], bool],
        rnd: random.Random | None = None,
        limit: int = 100_000,
    ) -> None:
        self.locator = locator
        self.serving = serving
        self.limit = limit
        self._rnd = rnd or random.Random()
        # pool, scope of the rules, scope with the sticky prefix, sticky key
        self._matches: dict[tuple[DynamicRecord, object], tuple[str, int, int, bytes]] = {}
        # The pool each region of the address space goes to: (record, IP version) -> prefix
        # length -> the region's leading bits -> pool. A rule match holds for every address in
        # the region its scope names, so a client network never seen before usually lands in a
        # region seen before (a resolver population sends a new /24 with nearly every query).
        self._regions: dict[tuple[DynamicRecord, int], dict[int, dict[int, str]]] = {}
        self._region_count = 0
        self._choices: dict[tuple[DynamicRecord, str], Choice] = {}
        self._sticky: dict[tuple[DynamicRecord, str, bytes], tuple[str, ...]] = {}

    def decide(self, record: DynamicRecord, ecs: bytes | None, host: str) -> Decision:
        """The answer for a query with ECS option data ``ecs`` (or None) from ``host``."""
        # ECS with SOURCE PREFIX-LENGTH 0: the resolver asks us to use its own address.
        key: object = ecs if ecs is not None and ecs[2] else host
        matched = self._matches.get((record, key))
        if matched is None:
            matched = self._match(record, ecs, host)
            if len(self._matches) >= self.limit:
                self._matches.clear()
            self._matches[(record, key)] = matched
        pool, scope, sticky_scope, client_key = matched
        choice = self._choices.get((record, pool))
        if choice is None:
            answered, values = healthy(record, pool, self.serving)
            choice = self._choices[(record, pool)] = make_choice(record, answered, values)
        fixed = choice.fixed
        if fixed is None and record.sticky:
            scope = sticky_scope  # the answer now depends on the client network too
        if ecs is not None and scope > ecs[2]:
            scope = ecs[2]  # never more specific than the client network we were told
        if fixed is not None:
            return fixed, choice.pool, scope, True
        if not record.sticky:
            return draw(choice, self._rnd), choice.pool, scope, False
        selection = self._sticky.get((record, choice.pool, client_key))
        if selection is None:
            selection = sticky(choice, client_key)
            if len(self._sticky) >= self.limit:
                self._sticky.clear()
            self._sticky[(record, choice.pool, client_key)] = selection
        return selection, choice.pool, scope, True

    def _match(
        self, record: DynamicRecord, ecs: bytes | None, host: str
    ) -> tuple[str, int, int, bytes]:
        client: Client = (
            client_from_ecs(ecs) if ecs is not None and ecs[2] else client_from_host(host)
        )
        pool, scope = self._region_match(record, client)
        if not record.sticky:
            return pool, scope, scope, b""
        client_key = sticky_key(record, client)
        return pool, scope, max(scope, client_key[1]), client_key

    def _region_match(self, record: DynamicRecord, client: Client) -> tuple[str, int]:
        """The rule match for ``client``, from a region matched before when it lies in one.

        A region's length may exceed what this client alone would need: the scope reported is
        then more specific than necessary, which is always correct (RFC 7871 7.2.1).
        """
        bits = client.bits
        regions = self._regions.get((record, client.version))
        if regions is not None:
            for length, pools in regions.items():
                pool = pools.get(client.address >> (bits - length))
                if pool is not None:
                    return pool, length
        pool, scope = match(record, client, self.locator)
        if self._region_count >= self.limit:
            self._regions.clear()
            self._region_count = 0
        by_length = self._regions.setdefault((record, client.version), {})
        by_length.setdefault(scope, {})[client.address >> (bits - scope)] = pool
        self._region_count += 1
        return pool, scope

    def health_changed(self) -> None:
        """Forget what depended on health; the next queries see the new state."""
        self._choices.clear()
        self._sticky.clear()
