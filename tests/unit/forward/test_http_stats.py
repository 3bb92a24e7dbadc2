"""forward/http_stats.py: latency histograms, request counters, the buffered access log."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.forward.http_stats import LATENCY_BUCKETS, REASONS, AccessLog, Histogram, HttpStats

seconds = st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False)
bounds = st.sampled_from(LATENCY_BUCKETS)


def test_buckets_are_increasing() -> None:
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    assert all(b > 0 for b in LATENCY_BUCKETS)


@given(st.lists(st.one_of(seconds, bounds), max_size=200))
def test_histogram_is_cumulative_monotonic_and_counts_everything(samples: list[float]) -> None:
    h = Histogram()
    for s in samples:
        h.observe(s)
    cumulative = h.cumulative()
    assert [b for b, _ in cumulative] == [*LATENCY_BUCKETS, math.inf]
    counts = [c for _, c in cumulative]
    assert counts == sorted(counts)  # monotonic
    assert counts[-1] == len(samples) == sum(h.counts)  # +Inf holds every observation
    for bound, count in cumulative:
        assert count == sum(1 for s in samples if s <= bound)  # "le": at or below the bound
    assert h.total == pytest.approx(sum(samples))


def test_an_observation_on_a_bound_is_in_that_bucket() -> None:
    h = Histogram()
    h.observe(0.1)
    h.observe(0.1000001)
    h.observe(60.0)
    h.observe(61.0)
    got = dict(h.cumulative())
    assert got[0.05] == 0 and got[0.1] == 1 and got[0.25] == 2
    assert got[30.0] == 2 and got[60.0] == 3 and got[math.inf] == 4


@given(st.lists(st.tuples(st.sampled_from(["r1", "r2"]), st.sampled_from(["a", "b"]),
                          st.integers(-5, 700), seconds, st.one_of(st.none(), seconds)),
                max_size=60))  # fmt: skip
def test_http_stats_count_by_route_backend_and_class(
    answers: list[tuple[str, str, int, float, float | None]],
) -> None:
    stats = HttpStats()
    for route, backend, status, total, upstream in answers:
        stats.answered(route, backend, status, total, upstream)
    assert sum(stats.requests.values()) == len(answers)
    for (route, backend, klass), n in stats.requests.items():
        expected = [
            a for a in answers if a[:2] == (route, backend)
            and (f"{a[2] // 100}xx" if 100 <= a[2] < 600 else "other") == klass
        ]  # fmt: skip
        assert n == len(expected) > 0
    for backend, histogram in stats.duration.items():
        assert sum(histogram.counts) == sum(1 for a in answers if a[1] == backend)
    for backend, histogram in stats.upstream.items():
        assert sum(histogram.counts) == sum(
            1 for a in answers if a[1] == backend and a[4] is not None
        )
    assert set(stats.refused) == set(REASONS) and not any(stats.refused.values())


def test_status_classes() -> None:
    stats = HttpStats()
    for status in (101, 200, 204, 301, 404, 431, 500, 503, 0, 99, 600, 999):
        stats.answered("*/", "app", status, 0.01, None)
    assert stats.requests == {
        ("*/", "app", "1xx"): 1,
        ("*/", "app", "2xx"): 2,
        ("*/", "app", "3xx"): 1,
        ("*/", "app", "4xx"): 2,
        ("*/", "app", "5xx"): 2,
        ("*/", "app", "other"): 4,
    }
    assert stats.upstream == {}


# --- AccessLog ------------------------------------------------------------------------------


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def log_one(log: AccessLog, i: int = 0, **over: object) -> None:
    fields: dict[str, object] = {
        "client": "192.0.2.1",
        "method": "GET",
        "host": "h.test",
        "target": f"/x/{i}?q=1",
        "status": 200,
        "bytes_in": 10,
        "bytes_out": 20,
        "backend": "app",
        "endpoint": "127.0.0.1:8080",
        "upstream": 0.0123,
        "total": 0.0456,
        "reason": "",
    }
    fields.update(over)
    log.request(**fields)  # type: ignore[arg-type]


def test_access_log_line_format() -> None:
    stream = CountingStream()
    log = AccessLog(stream, clock=lambda: 86400 * 365 + 3661.9)
    log_one(log)
    log_one(log, 1, host="", backend="", endpoint="", upstream=None, status=400,
            reason="bad_request", method="-")  # fmt: skip
    log.flush()
    assert stream.getvalue().splitlines() == [
        '1971-01-01T01:01:01Z 192.0.2.1 h.test "GET /x/0?q=1" 200 10 20 app 127.0.0.1:8080 '
        "12.3 45.6 -",
        '1971-01-01T01:01:01Z 192.0.2.1 - "- /x/1?q=1" 400 10 20 - - - 45.6 bad_request',
    ]


def test_access_log_buffers_until_flush() -> None:
    stream = CountingStream()
    log = AccessLog(stream, clock=lambda: 0.0)
    for i in range(10):
        log_one(log, i)
    assert stream.getvalue() == "" and stream.writes == 0  # nothing written per request
    log.flush()
    assert stream.writes == 1 and stream.flushes == 1  # one batch
    assert [line.split('"')[1] for line in stream.getvalue().splitlines()] == [
        f"GET /x/{i}?q=1" for i in range(10)
    ]
    log.flush()  # nothing buffered: nothing written
    assert stream.writes == 1 and log.lines == []


@given(st.integers(0, 700))
def test_access_log_writes_a_full_buffer_by_itself_in_order(n: int) -> None:
    stream = CountingStream()
    log = AccessLog(stream, clock=lambda: 0.0)
    for i in range(n):
        log_one(log, i)
    assert stream.writes == n // 256  # a batch per 256 lines, none before
    assert len(log.lines) == n % 256
    log.flush()
    lines = stream.getvalue().splitlines()
    assert [line.split('"')[1] for line in lines] == [f"GET /x/{i}?q=1" for i in range(n)]
