"""What to tell ExaBGP: from health and maintenance to per-prefix announcements. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from anycastedge.config.bgp import BgpConfig, RouteAttributes
from anycastedge.statedir.maintenance import Maintenance

ANNOUNCED, DRAINING, WITHDRAWN = "announced", "draining", "withdrawn"


@dataclass(frozen=True, slots=True)
class Desired:
    """What one prefix should look like to the peers."""

    status: str  # announced | draining | withdrawn
    attributes: RouteAttributes | None = None
    why: str = ""


def decide(
    serving: bool,
    was_announced: bool,
    maintenance: Maintenance | None,
    now: float,
    config: BgpConfig,
    prefix_is_local: bool,
    prefix: str = "the prefix",
) -> Desired:
    """The desired state of one prefix."""
    if not prefix_is_local and config.require_local_address:
        address = prefix.split("/")[0]
        return Desired(WITHDRAWN, why=f"{address} is not configured on a local interface")
    if maintenance is not None:
        # Drain only what is announced: a route nobody receives has nothing to drain.
        if was_announced and serving and now < maintenance.since + maintenance.drain_seconds:
            return Desired(DRAINING, config.drain, "maintenance: draining")
        return Desired(WITHDRAWN, why=f"maintenance: {maintenance.reason or 'withdrawn'}")
    if serving:
        return Desired(ANNOUNCED, config.up, "healthy")
    return Desired(WITHDRAWN, why="health checks failing")


def as_path(local_as: int, prepend: int) -> list[int]:
    """The AS path to send: the local AS once, plus ``prepend`` more copies."""
    return [local_as] * (1 + prepend)


def next_hop(prefix: str, config: BgpConfig) -> str:
    """The next hop for ``prefix``: ``self`` within one family, IPv4-mapped IPv6 across them.

    ExaBGP rejects ``next-hop self`` for an IPv6 route on an IPv4 session. Given the IPv4-mapped
    form of the local address it sends the IPv4 next hop, which the router must accept for IPv6
    (RFC 8950 extended next hop; BIRD: ``extended next hop on`` in the ipv6 channel).
    """
    hop = config.local_address if config.next_hop == "self" else config.next_hop
    if ":" in prefix and "." in hop:
        return f"::ffff:{hop}"
    return config.next_hop


def api_line(prefix: str, desired: Desired, config: BgpConfig) -> str:
    """The ExaBGP 5 API command for ``desired`` (all rendering of the text API is here)."""
    hop = next_hop(prefix, config)
    if desired.status == WITHDRAWN or desired.attributes is None:
        return f"withdraw route {prefix} next-hop {hop}"
    attrs = desired.attributes
    line = f"announce route {prefix} next-hop {hop} med {attrs.med}"
    if attrs.communities:
        line += f" community [{' '.join(attrs.communities)}]"
    if attrs.prepend:
        line += f" as-path [{' '.join(str(a) for a in as_path(config.local_as, attrs.prepend))}]"
    return line
