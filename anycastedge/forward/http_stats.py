"""What HTTP listeners count: requests by route, backend and status class, latency histograms,
refusals by reason; and the access log. Pure bookkeeping, read by /metrics and /status."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

# Seconds; Prometheus' defaults plus the long tail a proxy sees (slow backends, big bodies).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)

# Why a request got its answer from the proxy itself, or why a connection was cut.
REASONS = (
    "bad_request",  # 400: the parser refused the request
    "no_route",  # 404
    "header_timeout",  # 408: the whole head did not arrive in time
    "body_too_large",  # 413
    "header_too_large",  # 431: header bytes or count over the limit
    "upstream_error",  # 502: connect failed, reset, or a malformed response
    "no_endpoint",  # 503: nothing usable (down, ejected, at max_connections)
    "upstream_timeout",  # 504
    "max_connections",  # the listener's connection limit: closed at once
    "client_aborted",  # the client left before the response was complete
)


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-export latency histogram over LATENCY_BUCKETS."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound being +Inf."""
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class HttpStats:
    """One HTTP listener's counters."""

    # (route label, backend, status class "2xx") -> requests answered
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)
    duration: dict[str, Histogram] = field(default_factory=dict)  # backend -> whole request
    upstream: dict[str, Histogram] = field(default_factory=dict)  # backend -> to response head
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    bytes_in: int = 0  # request bytes from clients (heads and bodies)
    bytes_out: int = 0  # response bytes to clients

    def answered(
        self, route: str, backend: str, status: int, total: float, upstream: float | None
    ) -> None:
        """Count one request answered with ``status`` after ``total`` seconds."""
        key = (route, backend, _CLASSES[status // 100] if 0 < status < 600 else "other")
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.duration.get(backend)
        if histogram is None:
            histogram = self.duration[backend] = Histogram()
        histogram.observe(total)
        if upstream is not None:
            histogram = self.upstream.get(backend)
            if histogram is None:
                histogram = self.upstream[backend] = Histogram()
            histogram.observe(upstream)


_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


class AccessLog:
    """One line per request, buffered and written in batches (a write per request would cost
    more than the request)."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.clock = clock
        self.lines: list[str] = []
        self._second = -1  # the second _stamp was formatted for: one strftime a second
        self._stamp = ""

    def request(
        self,
        client: str,
        method: str,
        host: str,
        target: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        backend: str,
        endpoint: str,
        upstream: float | None,
        total: float,
        reason: str,
    ) -> None:
        """Note one request (written at the next flush)."""
        second = int(self.clock())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = self._stamp
        up = "-" if upstream is None else f"{upstream * 1000:.1f}"
        self.lines.append(
            f'{stamp}Z {client} {host or "-"} "{method} {target}" {status} {bytes_in} '
            f"{bytes_out} {backend or '-'} {endpoint or '-'} {up} {total * 1000:.1f} "
            f"{reason or '-'}\n"
        )
        if len(self.lines) >= 256:
            self.flush()

    def raw(self, line: str) -> None:
        """Note a line formatted elsewhere (HAProxy's, by the same format)."""
        self.lines.append(line if line.endswith("\n") else line + "\n")
        if len(self.lines) >= 256:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        if self.lines:
            self.stream.write("".join(self.lines))
            self.stream.flush()
            self.lines.clear()
