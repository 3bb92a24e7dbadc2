"""HAProxy's statistics as the forwarding tier's views: the same shape as the built-in's."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.forward.haproxy import worker_pids
from anycastedge.forward.haproxy_stats import (
    backend_views,
    listener_entries,
    parse_stat,
)
from anycastedge.forward.model import (
    Backend,
    Endpoint,
    ForwardConfig,
    Listener,
    ListenerHttp,
    Route,
)
from anycastedge.forward.view import critical_down

# `show stat` of HAProxy 2.6 after one request: app/e0 up, app/e1 down (connection refused).
SHOW_STAT = (Path(__file__).parents[2] / "fixtures/haproxy/show_stat.csv").read_text()

APP = Backend(
    "app", (Endpoint("127.0.0.1", 18181), Endpoint("127.0.0.1", 18182, 0)), critical=True
)
WEB = Listener("web", "127.0.0.1", 18180, "http", "", http=ListenerHttp((Route("app"),)))
CONFIG = ForwardConfig((WEB,), (APP,), engine="haproxy")


def test_parse_real_show_stat() -> None:
    stats = parse_stat(SHOW_STAT)
    assert set(stats) == {("web", "FRONTEND"), ("app", "e0"), ("app", "e1"), ("app", "BACKEND")}
    assert stats[("app", "e0")]["status"] == "UP"
    assert stats[("app", "e1")]["check_status"] == "L4CON"


def test_not_show_stat_is_refused() -> None:
    with pytest.raises(ValueError, match="show stat"):
        parse_stat("Unknown command.\n")


def test_backend_views_from_real_stats() -> None:
    [app] = backend_views(CONFIG, parse_stat(SHOW_STAT))
    e0, e1 = app.endpoints
    assert (e0.address, e0.up, e0.usable, e0.connections) == ("127.0.0.1:18181", True, True, 1)
    assert (e0.bytes_in, e0.bytes_out) == (82, 604)
    assert (e1.up, e1.usable, e1.weight) == (False, False, 0)
    assert app.up and critical_down([app]) == []


def test_without_statistics_every_endpoint_is_down() -> None:
    """HAProxy not answering: nothing can be known to take traffic (fail closed)."""
    [app] = backend_views(CONFIG, None)
    assert not app.up and not any(e.up or e.usable for e in app.endpoints)
    assert critical_down([app]) == ["app"]
    [web] = listener_entries(CONFIG, None)
    assert web["listening"] is False and web["accepted"] == 0


def test_listener_entries_from_real_stats() -> None:
    [web] = listener_entries(CONFIG, parse_stat(SHOW_STAT))
    assert web["listening"] is True
    assert (web["accepted"], web["requests"], web["refused"]) == (1, 1, 0)
    assert web["routes"][0]["backend"] == "app"


def _row(status: str, check: str, hanafail: int, weight: int = 1) -> dict[str, str]:
    return {"status": status, "check_status": check, "hanafail": str(hanafail),
            "weight": str(weight), "econ": "0"}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "check", "hanafail", "up", "ejected", "usable"),
    [
        ("UP", "L7OK", 0, True, False, True),
        ("UP 1/3", "L7STS", 0, True, False, True),  # going down: still up until fall
        ("DOWN", "L4CON", 0, False, False, False),
        ("DOWN 1/2", "L4OK", 0, False, False, False),  # coming back: down until rise
        ("DOWN", "L7OK", 3, True, True, False),  # marked down by observe: ejected
        ("MAINT", "L4OK", 0, False, False, False),
        ("NOLB", "L7OK", 0, True, False, False),
    ],
)
def test_server_status_mapping(
    status: str, check: str, hanafail: int, up: bool, ejected: bool, usable: bool
) -> None:
    config = ForwardConfig((), (Backend("b", (Endpoint("127.0.0.1", 1),)),))
    [b] = backend_views(config, {("b", "e0"): _row(status, check, hanafail)})
    [e] = b.endpoints
    assert (e.up, e.ejected, e.usable) == (up, ejected, usable)


def test_refused_is_the_backends_connect_errors_not_charged_to_a_server() -> None:
    config = ForwardConfig((), (Backend("b", (Endpoint("127.0.0.1", 1),)),))
    stats = {("b", "e0"): _row("UP", "L4OK", 0) | {"econ": "2"},
             ("b", "BACKEND"): {"econ": "7"}}  # fmt: skip
    [b] = backend_views(config, stats)
    assert b.refused == 5 and b.endpoints[0].connect_failures == 2


@given(st.booleans(), st.text())
def test_parse_stat_never_fails_otherwise(header: bool, text: str) -> None:
    """Whatever a socket returns: parsed, or ValueError (then the last statistics age)."""
    try:
        parse_stat(("# pxname,svname,status\n" if header else "") + text)
    except ValueError:
        pass


SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
14864           master          1 [failed: 0]   0d00h10m19s     2.6.12-1+deb12u4
# workers
15102           worker          0               0d00h10m03s     2.6.12-1+deb12u4
# old workers
14868           worker          1               0d00h10m19s     2.6.12-1+deb12u4
# programs

"""


def test_worker_pids_are_the_current_workers_only() -> None:
    assert worker_pids(SHOW_PROC) == {15102}
    assert worker_pids("") == set()


# The fields read, in HAProxy 2.6's order (show stat has more; the reader goes by name).
FIELDS = ("pxname,svname,scur,stot,bin,bout,econ,wretr,wredis,status,check_status,hrsp_5xx,"
          "hanafail,ctime")  # fmt: skip
TWO = ForwardConfig(
    (Listener("l", "127.0.0.1", 2222, "tcp", "b"),),
    (Backend("b", (Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002))),),
)


def stat(*rows: dict[str, str]) -> str:
    names = FIELDS.split(",")
    lines = ["# " + FIELDS]
    for row in rows:
        lines.append(",".join(row.get(name, "") for name in names))
    return "\n".join(lines) + "\n"


def server(name: str, **fields: str) -> dict[str, str]:
    return {"pxname": "b", "svname": name, "status": "UP", "check_status": "L4OK"} | fields


def test_a_server_marked_down_by_observe_is_ejected_not_down() -> None:
    """`observe layer4 ... on-error mark-down` leaves check_status HANA (HAProxy's "health
    analyze"): the active check last passed, traffic took it out: ejected, up as checked."""
    text = stat(server("e0", status="DOWN", check_status="HANA", hanafail="1"), server("e1"))
    e0, e1 = backend_views(TWO, parse_stat(text))[0].endpoints
    assert (e0.up, e0.ejected, e0.usable, e0.ejections) == (True, True, False, 1)
    assert (e1.up, e1.ejected, e1.usable) == (True, False, True)


def test_a_server_whose_check_fails_is_down_not_ejected() -> None:
    text = stat(server("e0", status="DOWN", check_status="L4CON", hanafail="1"), server("e1"))
    e0 = backend_views(TWO, parse_stat(text))[0].endpoints[0]
    assert (e0.up, e0.ejected, e0.usable) == (False, False, False)


def test_connect_failures_count_retried_and_redispatched_attempts() -> None:
    """A failed connect that HAProxy retries elsewhere (option redispatch) is counted in
    wredis, one it retries on the same server in wretr, and only a final failure in econ:
    every one is a connect failure of that endpoint."""
    text = stat(
        server("e0", econ="1", wretr="2", wredis="3"),
        server("e1"),
        {"pxname": "b", "svname": "BACKEND", "econ": "4", "status": "UP"},
    )
    view = backend_views(TWO, parse_stat(text))[0]
    assert [e.connect_failures for e in view.endpoints] == [6, 0]
    assert view.refused == 3  # the backend's failures no server was charged with

