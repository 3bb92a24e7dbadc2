"""UDP listeners: datagrams carried to an endpoint, replies back to the client.

Each client address and port is a flow with its own socket towards the endpoint (so replies are
told apart by the socket they arrive on); replies go out from the listener's socket, which is
the address the client wrote to. Flows end after ``idle_timeout`` without a datagram either way;
at most ``max_connections`` exist at once, and a datagram that would start one more is dropped
and counted. With ``per_packet``, each datagram is balanced on its own (DNS backends want that):
the flow then keeps one socket per endpoint used. A flow whose endpoint went down or was ejected
is balanced again on its next datagram: UDP has no connection to keep.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import protocol, task
from twisted.logger import Logger

from anycastedge.forward.model import Listener
from anycastedge.forward.pool import EndpointStats, Pool, client_key

log = Logger()
Address = tuple[str, int]


@dataclass(slots=True)
class Flow:
    """One client's traffic through one listener. Endpoints are known by address, not by their
    place in a pool: a reload builds new pools, and the flow keeps its endpoint if it stays."""

    client: Address
    last: float  # reactor time of the last datagram either way
    sockets: dict[Address, Any] = field(default_factory=dict)  # endpoint -> listening port
    endpoint: EndpointStats | None = None  # the endpoint of a flow (not per_packet)


class UdpListener(protocol.DatagramProtocol):
    """Receives clients' datagrams on one listener's address and forwards them."""

    transport: Any  # a UDP port: write(data, addr)
    noisy = False
    def __init__(self, listener: Listener, pool: Callable[[], Pool], reactor: Any) -> None:
        self.listener = listener
        self.pool = pool
        self.reactor = reactor
        self.flows: dict[Address, Flow] = {}
        self.refused = 0  # datagrams dropped: too many flows, or no endpoint up
        self.datagrams = 0
        self._sweeper: task.LoopingCall | None = None

    def startProtocol(self) -> None:  # noqa: N802
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = self.reactor
        self._sweeper.start(max(self.listener.idle_timeout / 4, 0.05), now=False)

    def stopProtocol(self) -> None:  # noqa: N802
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        for flow in list(self.flows.values()):
            self.end(flow)

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        client: Address = (addr[0], addr[1])
        now = self.reactor.seconds()
        self.datagrams += 1
        flow = self.flows.get(client)
        if flow is None:
            if len(self.flows) >= self.listener.max_connections:
                self.refused += 1
                return
            flow = self.flows[client] = Flow(client, now)
        flow.last = now
        pool = self.pool()
        current = flow.endpoint
        index = None if current is None else pool.index_of(current.endpoint.host_port())
        if self.listener.per_packet or index is None or index not in pool.usable():
            index = pool.pick(client_key(client[0]))
            if index is None:
                self.refused += 1
                pool.refused += 1
                if not flow.sockets:
                    del self.flows[client]
                return
            if not self.listener.per_packet:
                self.assign(flow, pool.stats[index])
        stats = pool.stats[index]
        address = stats.endpoint.host_port()
        sock = flow.sockets.get(address)
        if sock is None:
            sock = flow.sockets[address] = self.open(flow, address)
        stats.bytes_in += len(data)
        sock.write(data)

    def assign(self, flow: Flow, stats: EndpointStats) -> None:
        """The flow's endpoint is now ``stats``'s."""
        if flow.endpoint is not None:
            flow.endpoint.active -= 1
        flow.endpoint = stats
        stats.active += 1
        stats.connections += 1

    def open(self, flow: Flow, address: Address) -> Any:
        """A socket connected to the endpoint at ``address``, its replies going to the client."""
        host, port = address
        loopback = ipaddress.ip_address(host).is_loopback
        if ":" in host:
            interface = "::1" if loopback else "::"
        else:
            interface = "127.0.0.1" if loopback else "0.0.0.0"
        listening = self.reactor.listenUDP(0, _Replies(self, flow, address), interface=interface)
        listening.connect(host, port)
        return listening

    def reply(self, flow: Flow, address: Address, data: bytes) -> None:
        """A datagram from an endpoint: to the client, from the listener's own address."""
        flow.last = self.reactor.seconds()
        pool = self.pool()
        index = pool.index_of(address)
        if index is not None:
            pool.stats[index].bytes_out += len(data)
        if self.transport is not None:
            self.transport.write(data, flow.client)

    def refused_by(self, address: Address) -> None:
        """ICMP port unreachable from an endpoint: counted like a failed connect."""
        pool = self.pool()
        index = pool.index_of(address)
        if index is not None:
            pool.connect_failed(index)

    def sweep(self) -> None:
        """End the flows idle for longer than idle_timeout."""
        cutoff = self.reactor.seconds() - self.listener.idle_timeout
        for flow in [f for f in self.flows.values() if f.last < cutoff]:
            self.end(flow)

    def end(self, flow: Flow) -> None:
        self.flows.pop(flow.client, None)
        if flow.endpoint is not None:
            flow.endpoint.active -= 1
            flow.endpoint = None
        for port in flow.sockets.values():
            port.stopListening()
        flow.sockets.clear()


class _Replies(protocol.DatagramProtocol):
    """One flow's socket towards one endpoint."""

    noisy = False  # one per flow

    def __init__(self, listener: UdpListener, flow: Flow, address: Address) -> None:
        self.listener, self.flow, self.address = listener, flow, address

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        self.listener.reply(self.flow, self.address, data)

    def connectionRefused(self) -> None:  # noqa: N802
        self.listener.refused_by(self.address)
