"""The lab's network as data: every address is a documentation or benchmarking address, and
every command acts inside a lab namespace, never in the host's."""

from __future__ import annotations

import ipaddress

from anycastedge.lab.topology import ANYCAST, LAB, PREFIX, build_commands

ALLOWED = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15")]  # fmt: skip


def _addresses() -> list[str]:
    links = LAB.links
    return [ANYCAST] + [a.split("/")[0] for link in links for a in (link.a_addr, link.b_addr)]


def test_every_address_is_from_the_documentation_or_benchmarking_ranges() -> None:
    """Nothing in the lab can collide with a real network."""
    for address in _addresses():
        assert any(ipaddress.ip_address(address) in net for net in ALLOWED), address


def test_every_command_names_a_lab_namespace() -> None:
    """`ip netns add/exec NS` or `ip -n NS`: no command runs in the host's namespace, and a veth
    is created with both ends in lab namespaces."""
    for argv in build_commands(LAB):
        assert argv[0] == "ip"
        ns = argv[3] if argv[1] == "netns" else argv[2]
        assert argv[1] in ("netns", "-n") and ns in LAB.namespaces, argv
        if "veth" in argv:
            assert argv[argv.index("netns") + 1] in LAB.namespaces
        assert all(ns.startswith(PREFIX) for ns in LAB.namespaces)


def test_links_are_point_to_point_and_addresses_unique() -> None:
    """Each link's two ends share one subnet; no address is used twice."""
    for link in LAB.links:
        a = ipaddress.ip_interface(link.a_addr)
        b = ipaddress.ip_interface(link.b_addr)
        assert a.network == b.network and a.ip != b.ip
    addresses = _addresses()
    assert len(addresses) == len(set(addresses))


def test_pops_and_endpoints_are_found_by_their_names_and_addresses() -> None:
    """A BGP next hop names its POP; an endpoint's name names the POP it serves."""
    for pop in LAB.pops:
        assert LAB.pop_by_address(pop.address) == pop
        for endpoint in pop.endpoints:
            assert LAB.pop_of_endpoint(endpoint.name) == pop
    assert LAB.pop_by_address("198.18.9.9") is None
