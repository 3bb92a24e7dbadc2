"""Client-side probes, run inside a client namespace by ``lab test`` (``ip netns exec``):

    python -m anycastedge.lab.probe dns HOST:PORT NAME --rate 200 --duration 6
    python -m anycastedge.lab.probe http HOST:PORT --rate 20 --duration 6

Each sends at a steady rate for a bounded time (count = rate x duration), prints ``started T``
as it begins, and at the end one JSON line: ``{"samples": [[sent_at, label_or_null], ...]}``.
The label says who answered: a DNS reply's NSID (the POP), an HTTP reply's endpoint name (and
so the POP); null is a lost query or a failed request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Callable

import dns.edns
import dns.exception
import dns.message

from anycastedge.config.reader import parse_hostport

MAX_COUNT = 60_000  # DNS message IDs number the queries: a bound on any one run


def _paced(count: int, rate: float, send: Callable[[int], None]) -> float:
    """Call ``send(i)`` for i < count at ``rate`` per second; returns the start time."""
    started = time.time()
    print(f"started {started}", flush=True)
    for i in range(count):
        delay = started + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)  # pacing of a steady stream, not a wait for an event
        send(i)
    return started


def dns_probe(host: str, port: int, name: str, rate: float, count: int, timeout: float) -> list:
    """UDP queries with NSID, one every 1/rate s; each answered within ``timeout`` or lost."""
    nsid = dns.edns.GenericOption(dns.edns.NSID, b"")
    query = dns.message.make_query(name, "SOA", use_edns=0, options=[nsid])
    template = bytearray(query.to_wire())
    sent = [0.0] * count
    answered: list[str | None] = [None] * count
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.settimeout(0.2)
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                data = sock.recv(4096)
                reply = dns.message.from_wire(data)
            except (TimeoutError, dns.exception.DNSException):
                continue
            except OSError:  # ICMP unreachable while no route: the query is lost
                continue
            i, now = reply.id, time.time()
            if i < count and now - sent[i] <= timeout:
                nsid = next((o for o in reply.options if o.otype == dns.edns.NSID), None)
                answered[i] = nsid.to_wire().decode(errors="replace") if nsid else "?"

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()

    def send(i: int) -> None:
        template[0:2] = i.to_bytes(2, "big")
        sent[i] = time.time()
        try:
            sock.send(template)
        except OSError:
            pass  # no route right now: lost, as a client would see it

    _paced(count, rate, send)
    time.sleep(timeout)  # the last queries' answers are due within the timeout
    done.set()
    receiver.join(timeout=1.0)
    sock.close()
    return [[s, a] for s, a in zip(sent, answered, strict=True)]


def http_probe(host: str, port: int, rate: float, count: int, timeout: float) -> list:
    """GET / on a new connection every 1/rate s; the endpoint that answered, or null."""
    samples: list[list[object]] = []

    def send(i: int) -> None:
        at = time.time()
        label = None
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                label = str(json.loads(body)["endpoint"])
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass
        finally:
            conn.close()
        samples.append([at, label])

    _paced(count, rate, send)
    return samples


def main(argv: list[str] | None = None) -> int:
    """Run one probe and print its samples."""
    parser = argparse.ArgumentParser(prog="python -m anycastedge.lab.probe")
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("dns", "http"):
        p = sub.add_parser(kind)
        p.add_argument("target", type=parse_hostport)
        if kind == "dns":
            p.add_argument("name")
        p.add_argument("--rate", type=float, default=200.0)
        p.add_argument("--duration", type=float, default=6.0)
        p.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    count = min(MAX_COUNT, int(args.rate * args.duration))
    host, port = args.target
    if args.kind == "dns":
        samples = dns_probe(host, port, args.name, args.rate, count, args.timeout)
    else:
        samples = http_probe(host, port, args.rate, count, args.timeout)
    print(json.dumps({"samples": samples}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
