"""Response rate limiting (RRL) of UDP answers, with BIND 9's ``rate-limit`` semantics.

Each response is counted in an *account*: the client's network (IPv4 /24, IPv6 /56 by default)
and the response's *key*, a class and the name it counts under (see ``key``), built by the wire
fast path when it answers (docs/dns-behaviour.md, "Response rate limiting"). An account is a
token bucket: it earns its class's rate in credits a second, holds at most one second's worth,
and each response costs one. A response is limited while the balance is negative; the balance
never falls below ``-window * rate``, so a client that stopped flooding is answered again after
at most ``window`` seconds. Every ``slip``-th limited response is sent truncated (TC=1) instead
of being dropped, so that a real client whose address is being spoofed retries over TCP.

Pure: no I/O framework; the caller hands in a monotonic clock and applies the verdicts. TCP is
never limited: only the UDP protocol asks.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.name
import dns.rdatatype

# Answer classes: the first octet of a key.
RESPONSES, NXDOMAINS, NODATA, REFERRALS, ERRORS = range(5)
CLASS_LABELS = ("responses", "nxdomains", "nodata", "referrals", "errors")
ERRORS_KEY = bytes((ERRORS,))  # every error to a network counts in one account, as BIND

# Verdict bits of RateLimiter.check (0: send the response as it is).
DROP = 1
SLIP = 2  # send it truncated
LOG = 4  # the first limited response of an account since it was last answered: log it

LOG_LINES_PER_SECOND = 10  # beyond this, episodes are only counted (an attack must not flood logs)
# The counters' action label, by log_only and by slipped.
_ACTIONS = (("dropped", "slipped"), ("would_drop", "would_slip"))
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_EXEMPT = -1


def key(kind: int, name: bytes) -> bytes:
    """The account key of a response of class ``kind`` counted under ``name``: for RESPONSES the
    question (lower-cased wire name, type, class); for NXDOMAINS and NODATA the zone apex, for
    REFERRALS the delegation point (lower-cased wire names)."""
    return bytes((kind,)) + name


@dataclass(frozen=True, slots=True)
class RrlConfig:
    """``dns.rrl`` in pop.yaml; rates are responses per second per account (0: not limited)."""

    responses_per_second: int = 20
    nxdomains_per_second: int = 20
    nodata_per_second: int = 20
    referrals_per_second: int = 20
    errors_per_second: int = 20
    window: int = 15  # seconds: the longest debt, and so the time to recover after a flood
    slip: int = 2  # every Nth limited response is sent truncated; 0: none, 1: all
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    # Sources never limited: traffic from the host itself is not reflection (and tests, `make
    # run` and the benchmarks query from loopback). Setting the key replaces this list.
    exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    log_only: bool = False  # count and log what would be limited, answer everything
    max_table_size: int = 100_000  # accounts kept; those unused longest go first

    @property
    def rates(self) -> tuple[int, ...]:
        """The rates by class, in CLASS_LABELS order."""
        return (
            self.responses_per_second,
            self.nxdomains_per_second,
            self.nodata_per_second,
            self.referrals_per_second,
            self.errors_per_second,
        )


class _Account:
    """One client network's balance for one response key."""

    __slots__ = ("balance", "stamp", "slips", "limited")

    def __init__(self, balance: float, stamp: float) -> None:
        self.balance = balance
        self.stamp = stamp  # when it was last debited
        self.slips = 0  # limited responses since the last slipped one
        self.limited = False  # limited since it was last answered


class RateLimiter:
    """The accounts of one server, shared by its UDP sockets across zone reloads.

    ``check`` is called once per UDP response, with O(1) work: a dict lookup for the client's
    network (cached per source address), one for the account, a little arithmetic. The table
    holds at most ``max_table_size`` accounts in two generations; those not used for a whole
    generation are dropped (see ``_age``).
    """

    def __init__(
        self,
        config: RrlConfig,
        clock: Callable[[], float] = time.monotonic,
        counts: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.config = config
        self.log_only = config.log_only
        self._clock = clock
        self._rates = config.rates
        self._floors = tuple(-config.window * rate for rate in self._rates)
        # An account idle this long has earned back any debt and a full bucket: dropping it
        # changes nothing.
        self._stale = config.window + 1.0
        self._slip = config.slip
        self._shift4 = 32 - config.ipv4_prefix
        self._shift6 = 128 - config.ipv6_prefix
        # Exempt networks as (address width, network bits, bits below the prefix).
        self._exempt = tuple(
            (net.max_prefixlen, int(net.network_address) >> (net.max_prefixlen - net.prefixlen),
             net.max_prefixlen - net.prefixlen)
            for net in map(ipaddress.ip_network, config.exempt)
        )  # fmt: skip
        self._max = config.max_table_size
        # Two generations of accounts, by (network, key): an account used while in the old one
        # moves to the young one; when the young one holds half the table, the old one (what
        # was not used for a whole generation) is dropped. An approximate LRU at a plain dict
        # lookup per response (an OrderedDict's lookup and move cost twice as much).
        self._young: dict[tuple[int, bytes], _Account] = {}
        self._old: dict[tuple[int, bytes], _Account] = {}
        self._generation = max(1, config.max_table_size // 2)
        self._networks: dict[str, int] = {}  # source address -> its network, or _EXEMPT
        #: (action, class) -> responses: dropped, slipped; would_drop, would_slip in log_only.
        self.counts: dict[tuple[str, str], int] = counts if counts is not None else {}
        #: accounts pushed out of a full table before they had recovered (the table is too small)
        self.evictions = 0
        self._log_second = -1
        self._log_lines = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def check(self, host: str, response_key: bytes) -> int:
        """The verdict for one UDP response with key ``response_key`` to ``host``: 0 (send it),
        or DROP or SLIP, either possibly with LOG; in log_only mode at most LOG."""
        network = self._networks.get(host)
        if network is None:
            network = self._network(host)
        if network == _EXEMPT:
            return 0
        kind = response_key[0]
        rate = self._rates[kind]
        if not rate:
            return 0
        now = self._clock()
        ident = (network, response_key)
        account = self._young.get(ident)
        if account is None:
            account = self._old.pop(ident, None)
            if account is None:
                self._open(ident, rate - 1, now)
                return 0
            self._young[ident] = account
            if len(self._young) >= self._generation:
                self._age(now)
        balance = account.balance + (now - account.stamp) * rate
        if balance > rate:
            balance = rate
        balance -= 1
        account.stamp = now
        if balance >= 0:
            account.balance = balance
            if account.limited:
                account.limited = False
            return 0
        floor = self._floors[kind]
        account.balance = balance if balance > floor else floor
        return self._limited(account, kind, now)

    def _limited(self, account: _Account, kind: int, now: float) -> int:
        verdict = 0
        if not account.limited:
            account.limited = True
            account.slips = 0
            verdict = LOG if self._may_log(now) else 0
        account.slips += 1
        slip = self._slip
        slipped = bool(slip) and account.slips >= slip
        if slipped:
            account.slips = 0
        label = (_ACTIONS[self.log_only][slipped], CLASS_LABELS[kind])
        counts = self.counts
        counts[label] = counts.get(label, 0) + 1
        if self.log_only:
            return verdict
        if not slipped:
            return verdict | DROP
        # An error has nothing to truncate (FORMERR and NOTIMP carry no question): as BIND does,
        # it is "leaked" at the slip rate, sent as it is.
        return verdict if kind == ERRORS else verdict | SLIP

    def _may_log(self, now: float) -> bool:
        second = int(now)
        if second != self._log_second:
            self._log_second, self._log_lines = second, 0
        if self._log_lines >= LOG_LINES_PER_SECOND:
            return False
        self._log_lines += 1
        return True

    def _open(self, ident: tuple[int, bytes], balance: float, now: float) -> None:
        """A new account, in the young generation."""
        young = self._young
        young[ident] = _Account(balance, now)
        if len(young) >= self._generation:
            self._age(now)

    def _age(self, now: float) -> None:
        """The young generation is full: it becomes the old one, and the old one goes, less
        the accounts used since (they moved to the young one as they were used). Amortized O(1):
        half a table of new or revived accounts between two calls."""
        stale = self._stale
        self.evictions += sum(1 for a in self._old.values() if now - a.stamp <= stale)
        self._old = self._young
        self._young = {}

    def _network(self, host: str) -> int:
        """The account network of source address ``host`` (an int, odd for IPv6), or _EXEMPT;
        cached per address (the cache is cleared when full)."""
        try:
            if ":" in host:
                packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                if packed[:12] == _V4_MAPPED:
                    packed = packed[12:]
            else:
                packed = socket.inet_pton(socket.AF_INET, host)
        except OSError:
            return _EXEMPT  # not an IP address (never from a UDP socket): nothing to key on
        address = int.from_bytes(packed, "big")
        width = 8 * len(packed)
        if any(w == width and address >> shift == bits for w, bits, shift in self._exempt):
            network = _EXEMPT
        elif width == 32:
            network = (address >> self._shift4) << 1
        else:
            network = ((address >> self._shift6) << 1) | 1
        if len(self._networks) >= self._max:
            self._networks.clear()
        self._networks[host] = network
        return network

    def network_text(self, host: str) -> str:
        """``host``'s account network as a CIDR (for the log)."""
        address = ipaddress.ip_address(host.partition("%")[0])
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        length = self.config.ipv4_prefix if address.version == 4 else self.config.ipv6_prefix
        return str(ipaddress.ip_network(f"{address}/{length}", strict=False))

    def describe(self, host: str, response_key: bytes) -> str:
        """What an account counts, in words: "nxdomains to 192.0.2.0/24 for example.com."."""
        kind = response_key[0]
        words = f"{CLASS_LABELS[kind]} to {self.network_text(host)}"
        if kind == ERRORS:
            return words
        name, used = dns.name.from_wire(response_key, 1)
        words += f" for {name}"
        if kind == RESPONSES and len(response_key) >= 1 + used + 2:
            rdtype = int.from_bytes(response_key[1 + used : 3 + used], "big")
            words += f" {dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))}"
        return words
