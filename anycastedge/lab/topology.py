"""The lab's network, as data, and the `ip` commands that build it (pure: nothing runs here).

Every namespace, link and address is the lab's own. Links are veth pairs created with both ends
inside lab namespaces (``ip -n A link add ... peer ... netns B``), so the host's namespace never
holds a lab interface, address or route. Addresses come from the documentation ranges (clients,
the anycast address) and the benchmarking range 198.18.0.0/15 (links).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREFIX = "ae-"  # every namespace of the lab: `down` removes exactly these
ROUTER = PREFIX + "router"
BACKENDS = PREFIX + "backends"
ANYCAST = "203.0.113.53"
ROUTER_ID = "198.18.0.1"
DNS_PORT, HTTP_PORT = 53, 80


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair: one end in each namespace, each with its address (CIDR)."""

    a_ns: str
    a_if: str
    a_addr: str
    b_ns: str
    b_if: str
    b_addr: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One HTTP endpoint in the backends namespace, serving one POP."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """``HOST:PORT``."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Pop:
    """A POP: its namespace, its config in bgp/lab/, its address towards the router, and the
    endpoints its forwarding tier sends HTTP to."""

    name: str
    address: str  # on its link to the router: DNS unicast, BGP local address
    router_side: str
    endpoints: tuple[Endpoint, ...]

    @property
    def ns(self) -> str:
        """Its network namespace."""
        return PREFIX + self.name

    def config(self, repo: Path) -> Path:
        """Its pop.yaml, committed in bgp/lab/."""
        return repo / "bgp" / "lab" / f"{self.name}.yaml"


@dataclass(frozen=True, slots=True)
class Client:
    """A client in its own network behind the router."""

    name: str
    address: str
    router_side: str
    prefix_len: int

    @property
    def ns(self) -> str:
        """Its network namespace."""
        return PREFIX + self.name


@dataclass(frozen=True, slots=True)
class Topology:
    """The whole lab."""

    pops: tuple[Pop, ...]
    clients: tuple[Client, ...]

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace, the router first."""
        return (ROUTER, *(p.ns for p in self.pops), *(c.ns for c in self.clients), BACKENDS)

    @property
    def links(self) -> tuple[Link, ...]:
        """router-POP, router-client and POP-backends links."""
        links = [
            Link(ROUTER, f"to-{p.name}", f"{p.router_side}/24",
                 p.ns, "to-router", f"{p.address}/24")
            for p in self.pops
        ]  # fmt: skip
        links += [
            Link(ROUTER, f"to-{c.name}", f"{c.router_side}/{c.prefix_len}",
                 c.ns, "to-router", f"{c.address}/{c.prefix_len}")
            for c in self.clients
        ]  # fmt: skip
        for p in self.pops:
            backend_host = p.endpoints[0].host
            pop_side = backend_host.rsplit(".", 1)[0] + ".1"
            links.append(
                Link(p.ns, "to-backends", f"{pop_side}/24", BACKENDS, f"to-{p.name}",
                     f"{backend_host}/24")
            )  # fmt: skip
        return tuple(links)

    def pop_by_address(self, address: str) -> Pop | None:
        """The POP whose router-link address is ``address`` (a BGP next hop)."""
        return next((p for p in self.pops if p.address == address), None)

    def pop_of_endpoint(self, name: str) -> Pop | None:
        """The POP an endpoint (by its name) serves."""
        return next((p for p in self.pops if any(e.name == name for e in p.endpoints)), None)


def _pop(n: int) -> Pop:
    backends = f"198.18.1{n}.2"
    endpoints = tuple(
        Endpoint(f"pop{n}-{tag}", backends, port) for tag, port in (("a", 8081), ("b", 8082))
    )
    return Pop(f"pop{n}", f"198.18.{n}.2", f"198.18.{n}.1", endpoints)


LAB = Topology(
    pops=(_pop(1), _pop(2)),
    clients=(
        Client("client1", "192.0.2.10", "192.0.2.1", 25),  # EU in the POPs' geo view
        Client("client2", "198.51.100.10", "198.51.100.1", 24),  # NA-US
    ),
)


def build_commands(topology: Topology) -> list[list[str]]:
    """The commands that build ``topology``, in order; each names the namespace it acts in."""
    commands: list[list[str]] = []
    for ns in topology.namespaces:
        commands += [["ip", "netns", "add", ns], ["ip", "-n", ns, "link", "set", "lo", "up"]]
    for link in topology.links:
        commands.append(
            ["ip", "-n", link.a_ns, "link", "add", link.a_if, "type", "veth",
             "peer", "name", link.b_if, "netns", link.b_ns]
        )  # fmt: skip
        for ns, ifname, addr in ((link.a_ns, link.a_if, link.a_addr),
                                 (link.b_ns, link.b_if, link.b_addr)):  # fmt: skip
            commands += [
                ["ip", "-n", ns, "address", "add", addr, "dev", ifname],
                ["ip", "-n", ns, "link", "set", ifname, "up"],
            ]
    commands.append(["ip", "netns", "exec", ROUTER, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for pop in topology.pops:
        commands += [
            ["ip", "-n", pop.ns, "address", "add", f"{ANYCAST}/32", "dev", "lo"],
            ["ip", "-n", pop.ns, "route", "add", "default", "via", pop.router_side],
        ]
    for client in topology.clients:
        commands.append(["ip", "-n", client.ns, "route", "add", "default", "via",
                         client.router_side])  # fmt: skip
    return commands
