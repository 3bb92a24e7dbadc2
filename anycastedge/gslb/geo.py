"""Where a client is: octoDNS geo codes from pop.yaml CIDR lists, then a MaxMind database."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from octodns.record.geo import GeoCodes


@dataclass(frozen=True, slots=True)
class Client:
    """The asking network: an address (bits past ``prefix`` are zero) of IP ``version``."""

    version: int
    address: int
    prefix: int

    @property
    def bits(self) -> int:
        """Address width: 32 or 128."""
        return 32 if self.version == 4 else 128


def client_from_host(host: str) -> Client:
    """The client of a query without ECS: its source address, all bits significant.

    A host that is not an address (a test transport) is an unknown client: ``::/0``.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return Client(6, 0, 0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a v4 client on a dual-stack socket
    return Client(ip.version, int(ip), ip.max_prefixlen)


def expand(code: str) -> tuple[str, ...]:
    """``NA-US-CA`` -> (``NA-US-CA``, ``NA-US``, ``NA``): most specific first."""
    parts = code.split("-")
    return tuple("-".join(parts[:n]) for n in range(len(parts), 0, -1))


def needed_prefix(address: int, bits: int, network: int, length: int) -> tuple[int, bool]:
    """Whether ``address`` is in the network, and the shortest prefix of it that lies wholly
    inside (the network's own length) or wholly outside (one bit past where they first differ).
    """
    differ = address ^ network
    if not differ >> (bits - length):
        return length, True
    return bits - differ.bit_length() + 1, False


class GeoDatabase(Protocol):
    """The part of a MaxMind database reader the locator uses."""

    def get_with_prefix_len(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any: ...


class GeoLocator:
    """Maps a client to geo codes; ``networks`` (most specific wins) come before the database."""

    def __init__(
        self,
        networks: Sequence[tuple[str, Sequence[str]]] = (),
        database: GeoDatabase | None = None,
    ) -> None:
        """``database`` is an opened MaxMind reader (``maxminddb.open_database``); its opener
        owns it and closes it when the locator is replaced."""
        entries: list[tuple[int, int, int, tuple[str, ...]]] = []
        for code, cidrs in networks:
            for cidr in cidrs:
                net = ipaddress.ip_network(cidr)
                entries.append((net.version, int(net.network_address), net.prefixlen, expand(code)))
        # Longest prefix first, so the first containing network is the most specific one.
        entries.sort(key=lambda e: -e[2])
        self._entries = tuple(entries)
        self._reader = database

    def locate(self, client: Client) -> tuple[tuple[str, ...], int]:
        """Geo codes (most specific first, empty if unknown) and the prefix they hold for."""
        bits = client.bits
        scope = 0
        found: tuple[str, ...] | None = None
        for version, network, length, codes in self._entries:
            if version != client.version:
                continue
            needed, inside = needed_prefix(client.address, bits, network, length)
            scope = max(scope, needed)
            if found is None and inside:
                found = codes
        if found is not None:
            return found, scope
        if self._reader is None:
            return (), scope
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv4Address(client.address)
            if client.version == 4
            else ipaddress.IPv6Address(client.address)
        )
        record, length = self._reader.get_with_prefix_len(ip)
        return _codes(record), max(scope, length)


def _codes(record: Any) -> tuple[str, ...]:
    """octoDNS codes from a GeoIP2/GeoLite2 Country or City record."""
    if not isinstance(record, dict):
        return ()
    country = (record.get("country") or {}).get("iso_code")
    continent = (record.get("continent") or {}).get("code")
    if not country:
        return expand(continent) if continent else ()
    if not continent:
        code = GeoCodes.country_to_code(country)
        if code is None:
            return ()
        continent = code.split("-")[0]
    subdivisions = record.get("subdivisions") or []
    subdivision = subdivisions[0].get("iso_code") if subdivisions else None
    code = f"{continent}-{country}" + (f"-{subdivision}" if subdivision else "")
    return expand(code)


def client_from_ecs(option: bytes) -> Client:
    """The client an EDNS Client Subnet option names (RFC 7871; validated by the parser)."""
    family, source = (option[0] << 8) | option[1], option[2]
    width = 4 if family == 1 else 16
    address = int.from_bytes(option[4:].ljust(width, b"\0"), "big")
    return Client(4 if family == 1 else 6, address, source)
