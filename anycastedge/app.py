"""Assembles one MultiService from a validated PopConfig and an injected reactor."""

from __future__ import annotations

from typing import Any

from twisted.application import internet, service

from anycastedge.config.pop import PopConfig
from anycastedge.control.http import control_site
from anycastedge.control.metrics import make_registry
from anycastedge.dns.server import DnsDatagramProtocol, DnsStreamFactory
from anycastedge.dns.service import ZoneService


def build_dns(config: PopConfig, reactor: Any) -> tuple[service.MultiService, ZoneService]:
    """The DNS part: the zone service plus a UDP and a TCP server per listen address."""
    top = service.MultiService()
    zones = ZoneService(config.pop, config.dns, reactor, state_dir=config.state_dir)
    zones.setServiceParent(top)
    stream = DnsStreamFactory(
        zones, reactor, config.dns.tcp_idle_timeout, config.dns.tcp_max_connections
    )
    for host, port in config.dns.listen:
        udp = internet.UDPServer(port, DnsDatagramProtocol(zones), interface=host, reactor=reactor)
        udp.setServiceParent(top)
        tcp = internet.TCPServer(port, stream, interface=host, backlog=1024, reactor=reactor)
        tcp.setServiceParent(top)
    return top, zones


def build_app(config: PopConfig, reactor: Any) -> tuple[service.MultiService, ZoneService]:
    """Everything ``anycastedge serve`` runs; zones must still be loaded before starting."""
    top, zones = build_dns(config, reactor)
    if config.control.listen is not None:
        host, port = config.control.listen
        site = control_site(config, zones, make_registry(zones, config))
        internet.TCPServer(port, site, interface=host, reactor=reactor).setServiceParent(top)
    return top, zones
