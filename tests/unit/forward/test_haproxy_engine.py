"""The HAProxy engine's bookkeeping without HAProxy: which statistics count as HAProxy's now."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from anycastedge.forward.haproxy import STATS_STALE, HaproxyEngine
from anycastedge.forward.haproxy_files import CHECK_ARGS, check_words
from anycastedge.forward.haproxy_render import Runtime
from anycastedge.forward.model import (
    Backend,
    Endpoint,
    ForwardConfig,
    Listener,
    ListenerHttp,
    Route,
)

SHOW_STAT = (Path(__file__).parents[2] / "fixtures/haproxy/show_stat.csv").read_bytes()
APP = Backend("app", (Endpoint("127.0.0.1", 18181), Endpoint("127.0.0.1", 18182, 0)), critical=True)
WEB = Listener("web", "127.0.0.1", 18180, "http", "", http=ListenerHttp((Route("app"),)))
CONFIG = ForwardConfig((WEB,), (APP,), engine="haproxy")


class FakeProcess:
    """A Popen that runs (or has exited) as the test says."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def engine(tmp_path: Path, now: list[float]) -> HaproxyEngine:
    return HaproxyEngine(CONFIG, Runtime(str(tmp_path)), Clock(), clock=lambda: now[0])


def test_statistics_count_for_the_master_they_were_read_under(tmp_path: Path) -> None:
    """Statistics read from one HAProxy do not vouch for the next: right after a restart the
    new one may not listen yet, so its endpoints count as down until it answers itself."""
    now = [100.0]
    e = engine(tmp_path, now)
    first = FakeProcess(41)
    e.supervisor.workers[0].process = first  # type: ignore[assignment]
    e.took_stats(SHOW_STAT, 41)
    assert e.fresh_stats() is not None
    assert e.critical_down() == [] and e.health_problems() == []

    first.returncode = -9  # killed; the supervisor starts another at once
    e.supervisor.workers[0].process = FakeProcess(42)  # type: ignore[assignment]
    now[0] += 0.5  # well within STATS_STALE of the last answer
    assert e.fresh_stats() is None
    assert not any(endpoint.usable for view in e.backend_views() for endpoint in view.endpoints)
    assert e.critical_down() == ["app"]
    assert e.health_problems()[0].startswith("haproxy has not answered")

    # An answer asked of the old master but arriving now does not count either.
    e.took_stats(SHOW_STAT, 41)
    assert e.fresh_stats() is None
    e.took_stats(SHOW_STAT, 42)
    assert e.fresh_stats() is not None and e.critical_down() == []
    now[0] += STATS_STALE + 0.1
    assert e.fresh_stats() is None  # and stale ones never did


def test_unreadable_statistics_change_nothing(tmp_path: Path) -> None:
    now = [10.0]
    e = engine(tmp_path, now)
    e.supervisor.workers[0].process = FakeProcess(7)  # type: ignore[assignment]
    e.took_stats(b"Unknown command\n", 7)
    assert e.fresh_stats() is None and e.stats_pid is None


# What HAProxy 2.6's `haproxy -c -f` printed refusing a ca-file that holds no certificate.
REFUSAL = """[NOTICE]   (24990) : haproxy version is 2.6.12-1+deb12u4
[NOTICE]   (24990) : path to executable is /usr/sbin/haproxy
[ALERT]    (24990) : config : [r.cfg:65] : 'server app/e0' : Couldn't open the ca-file \
'/tmp/ca.txt' (no certificate or crl found).
[ALERT]    (24990) : config : Error(s) found in configuration file : r.cfg
"""


def test_check_words_are_the_alerts_without_notices() -> None:
    words = check_words(REFUSAL)
    assert words.splitlines()[0].startswith("[ALERT]")
    assert "Couldn't open the ca-file '/tmp/ca.txt'" in words
    assert "NOTICE" not in words
    assert check_words("[NOTICE] only this\n") == "[NOTICE] only this"
    assert check_words("  \n") == ""


def test_check_is_not_quiet() -> None:
    """haproxy -c -q says nothing even when it refuses: a refusal would come without a why."""
    assert "-q" not in CHECK_ARGS and CHECK_ARGS[0] == "-c"
