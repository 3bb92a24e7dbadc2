"""forward/haproxy_stats.py: HAProxy's ``show stat`` rows as the views /status and /metrics show."""

from __future__ import annotations

from anycastedge.forward.haproxy_stats import backend_views, parse_stat
from anycastedge.forward.model import Backend, Endpoint, ForwardConfig, Listener

# The fields read, in HAProxy 2.6's order (show stat has more; the reader goes by name).
FIELDS = ("pxname,svname,scur,stot,bin,bout,econ,wretr,wredis,status,check_status,hrsp_5xx,"
          "hanafail,ctime")  # fmt: skip
CONFIG = ForwardConfig(
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
    e0, e1 = backend_views(CONFIG, parse_stat(text))[0].endpoints
    assert (e0.up, e0.ejected, e0.usable, e0.ejections) == (True, True, False, 1)
    assert (e1.up, e1.ejected, e1.usable) == (True, False, True)


def test_a_server_whose_check_fails_is_down_not_ejected() -> None:
    text = stat(server("e0", status="DOWN", check_status="L4CON", hanafail="1"), server("e1"))
    e0 = backend_views(CONFIG, parse_stat(text))[0].endpoints[0]
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
    view = backend_views(CONFIG, parse_stat(text))[0]
    assert [e.connect_failures for e in view.endpoints] == [6, 0]
    assert view.refused == 3  # the backend's failures no server was charged with


def test_without_statistics_every_endpoint_is_down() -> None:
    view = backend_views(CONFIG, None)[0]
    assert not view.up and not any(e.up for e in view.endpoints)
