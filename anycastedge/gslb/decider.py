"""Per-query GSLB decisions with the caches that keep them off the slow path.

Four caches, all bounded: which pool each region of the address space goes to (independent of
health), which pool a source address goes to (queries without ECS), what each pool can answer
with (cleared when any health changes), and sticky answers (cleared likewise).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from anycastedge.gslb.geo import Client, GeoLocator, client_from_host
from anycastedge.gslb.model import DynamicRecord
from anycastedge.gslb.select import Choice, draw, healthy, make_choice, match, sticky, sticky_key
from anycastedge.health.check import CheckTarget

# selection, pool answered from, ECS scope, whether every query of this client gets it
Decision = tuple[tuple[str, ...], str, int, bool]
Region = tuple[str, int]  # the pool of a rule match, and the prefix length it holds for


class Regions:
    """Rule matches of one record and IP version by region, looked up an address octet at a time.

    A match holds for every address inside the prefix its scope names, with that same scope
    (each boundary examined lies wholly inside or outside it), so the regions are disjoint CIDR
    blocks and the table is exact whatever order it was filled in. Each level is a dict from the
    next octet to a Region or to the next level; a region /L fills the 2**(8k-L) octets it covers
    at level k = max(1, ceil(L/8)). A lookup is at most one dict get per octet, and a network
    never seen before (a resolver population sends a new /24 with nearly every query) usually
    finds a region matched before.
    """

    __slots__ = ("root", "size")

    def __init__(self) -> None:
        self.root: dict[int, Any] = {}  # octet -> Region | the next level
        self.size = 0  # dict entries held: what bounds the table's memory

    def get(self, address: bytes) -> Region | None:
        """The region holding ``address`` (full width, network order), if added."""
        level = self.root
        for octet in address:
            found = level.get(octet)
            if type(found) is not dict:
                return found
            level = found
        return None

    def add(self, address: bytes, region: Region) -> None:
        """Record ``region`` for the block of its length around ``address``."""
        length = region[1]
        depth = (length - 1) // 8 if length else 0  # full octets above the region's level
        level = self.root
        for octet in address[:depth]:
            below = level.get(octet)
            if type(below) is not dict:  # (never a Region: the regions are disjoint)
                below = level[octet] = {}
                self.size += 1
            level = below
        spare = 8 * (depth + 1) - length  # octet bits inside the region
        first = address[depth] >> spare << spare
        for octet in range(first, first + (1 << spare)):
            level[octet] = region
        self.size += 1 << spare


class Decider:
    """Decides dynamic answers for clients, from a locator and a view of the health checks."""

    __slots__ = (
        "locator", "serving", "limit", "_rnd", "_hosts", "_regions", "_choices", "_sticky",
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
        # Queries without ECS: (record, source address) -> pool, scope, sticky key. Parsing the
        # address is the cost saved; ECS option data needs no parsing, so it is not cached here.
        self._hosts: dict[tuple[DynamicRecord, str], tuple[str, int, bytes]] = {}
        # Per IP version (index 0: IPv4, 1: IPv6), per record; each started anew at ``limit``
        # entries. How many regions there are follows the networks the rules, the geo networks
        # and the database name, not how many client networks ask.
        self._regions: tuple[dict[DynamicRecord, Regions], ...] = ({}, {})
        self._choices: dict[tuple[DynamicRecord, str], Choice] = {}
        self._sticky: dict[tuple[DynamicRecord, str, bytes], tuple[str, ...]] = {}

    def decide(self, record: DynamicRecord, ecs: bytes | None, host: str) -> Decision:
        """The answer for a query with ECS option data ``ecs`` (or None) from ``host``."""
        client_key: bytes | None = None
        # ECS with SOURCE PREFIX-LENGTH 0: the resolver asks us to use its own address.
        if ecs is not None and ecs[2]:
            six = ecs[0] != 0 or ecs[1] != 1  # family 1 is IPv4; the parser refuses all but 1, 2
            address = ecs[4:].ljust(16 if six else 4, b"\0")
            regions = self._regions[six].get(record)
            found = regions.get(address) if regions is not None else None
            if found is None:
                found = self._region_match(record, 6 if six else 4, ecs[2], address)
            pool, scope = found
        else:
            matched = self._hosts.get((record, host))
            if matched is None:
                matched = self._host_match(record, host)
            pool, scope, client_key = matched
        choice = self._choices.get((record, pool))
        if choice is None:
            answered, values = healthy(record, pool, self.serving)
            choice = self._choices[(record, pool)] = make_choice(record, answered, values)
        fixed = choice.fixed
        if fixed is None and record.sticky:
            if client_key is None:
                assert ecs is not None  # only the ECS path leaves the key to be made here
                client_key = _ecs_sticky_key(record, ecs)
            if client_key[1] > scope:
                scope = client_key[1]  # the answer now depends on the client network too
        if ecs is not None and scope > ecs[2]:
            scope = ecs[2]  # never more specific than the client network we were told
        if fixed is not None:
            return fixed, choice.pool, scope, True
        if not record.sticky:
            return draw(choice, self._rnd), choice.pool, scope, False
        assert client_key is not None
        selection = self._sticky.get((record, choice.pool, client_key))
        if selection is None:
            selection = sticky(choice, client_key)
            if len(self._sticky) >= self.limit:
                self._sticky.clear()
            self._sticky[(record, choice.pool, client_key)] = selection
        return selection, choice.pool, scope, True

    def _host_match(self, record: DynamicRecord, host: str) -> tuple[str, int, bytes]:
        """Match the source address ``host`` and cache it: pool, scope and sticky key."""
        client = client_from_host(host)
        address = client.address.to_bytes(client.bits // 8, "big")
        regions = self._regions[client.version == 6].get(record)
        found = regions.get(address) if regions is not None else None
        if found is None:
            found = self._region_match(record, client.version, client.prefix, address)
        client_key = sticky_key(record, client) if record.sticky else b""
        matched = (*found, client_key)
        if len(self._hosts) >= self.limit:
            self._hosts.clear()
        self._hosts[(record, host)] = matched
        return matched

    def _region_match(
        self, record: DynamicRecord, version: int, prefix: int, address: bytes
    ) -> Region:
        """Match the client network ``address`` (full width) / ``prefix`` by the rules, and keep
        the region that match holds for."""
        client = Client(version, int.from_bytes(address, "big"), prefix)
        region = match(record, client, self.locator)
        by_record = self._regions[version == 6]
        regions = by_record.get(record)
        if regions is None or regions.size >= self.limit:
            regions = by_record[record] = Regions()
        regions.add(address, region)
        return region

    def health_changed(self) -> None:
        """Forget what depended on health; the next queries see the new state."""
        self._choices.clear()
        self._sticky.clear()


def _ecs_sticky_key(record: DynamicRecord, ecs: bytes) -> bytes:
    """``sticky_key`` of the client network the ECS option data names, from its bytes."""
    six = ecs[0] != 0 or ecs[1] != 1
    prefix = min(record.sticky_prefix.ipv6 if six else record.sticky_prefix.ipv4, ecs[2])
    whole, rest = divmod(prefix, 8)
    network = ecs[4 : 4 + whole]
    if rest:
        network += bytes((ecs[4 + whole] & (0xFF00 >> rest) & 0xFF,))
    return bytes((6 if six else 4, prefix)) + network.ljust(16 if six else 4, b"\0")
