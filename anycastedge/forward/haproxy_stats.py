"""HAProxy's ``show stat`` as the forwarding tier's views (forward/view.py). Pure.

Rendering names every frontend after its listener, every backend after its backend and every
server ``eN`` after endpoint N, so the statistics map back onto pop.yaml without guessing.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from anycastedge.forward.model import ForwardConfig
from anycastedge.forward.view import BackendView, EndpointView, route_entries

Stats = dict[tuple[str, str], dict[str, str]]  # (proxy, service) -> field -> value
# Check results that mean the endpoint answered (HAProxy's check_status codes).
_CHECK_PASSED = ("L4OK", "L6OK", "L7OK", "L7OKC")
# What check_status says right after `observe ... on-error mark-down` took a server down: no
# active check has failed (the last one passed), traffic did.
_MARKED_DOWN = "HANA"


def parse_stat(text: str) -> Stats:
    """``show stat`` CSV (its header line starts with "# ") by proxy and service name."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy's show stat output (no '# pxname,...' header)")
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    try:
        return {
            (row["pxname"], row["svname"]): row
            for row in rows
            if isinstance(row.get("pxname"), str) and isinstance(row.get("svname"), str)
        }
    except csv.Error as exc:
        raise ValueError(f"unreadable show stat output: {exc}") from None


def _int(row: dict[str, str] | None, key: str) -> int:
    value = (row or {}).get(key) or ""
    return int(value) if value.isdigit() else 0


def backend_views(config: ForwardConfig, stats: Stats | None) -> list[BackendView]:
    """Every backend of ``config`` as HAProxy reports it; with no statistics (HAProxy not
    answering) every endpoint counts as down: nothing can be known to take traffic."""
    out = []
    for backend in config.backends:
        endpoints = []
        failures = 0
        for i, endpoint in enumerate(backend.endpoints):
            row = stats.get((backend.name, f"e{i}")) if stats is not None else None
            status = (row or {}).get("status", "")
            check = (row or {}).get("check_status", "")
            passed = check in _CHECK_PASSED or check == _MARKED_DOWN
            marked_down = status.startswith("DOWN") and passed and _int(row, "hanafail") > 0
            up = status.startswith(("UP", "NOLB", "DRAIN")) or marked_down
            failures += _int(row, "econ")
            ctime = _int(row, "ctime")
            endpoints.append(
                EndpointView(
                    address=str(endpoint),
                    weight=endpoint.weight,
                    up=up,
                    ejected=marked_down,
                    ejections=_int(row, "hanafail"),
                    usable=status.startswith("UP") and endpoint.weight > 0,
                    active=_int(row, "scur"),
                    connections=_int(row, "stot"),
                    # Every failed attempt counts once: retried on the server (wretr), sent
                    # to another (wredis), or given up (econ).
                    connect_failures=_int(row, "econ") + _int(row, "wretr") + _int(row, "wredis"),
                    connect_time=ctime / 1000 if ctime else None,
                    bytes_in=_int(row, "bin"),
                    bytes_out=_int(row, "bout"),
                    responses_5xx=_int(row, "hrsp_5xx"),
                )
            )
        whole = stats.get((backend.name, "BACKEND")) if stats is not None else None
        out.append(
            BackendView(
                name=backend.name,
                balance=backend.balance,
                critical=backend.critical,
                # The backend's connect errors not charged to a server: no server to try.
                refused=max(0, _int(whole, "econ") - failures),
                endpoints=tuple(endpoints),
            )
        )
    return out


def listener_entries(config: ForwardConfig, stats: Stats | None) -> list[dict[str, Any]]:
    """Every listener with what its HAProxy frontend counted (/status)."""
    out = []
    for listener in config.listeners:
        row = stats.get((listener.name, "FRONTEND")) if stats is not None else None
        entry: dict[str, Any] = {
            "name": listener.name,
            "bind": listener.bind,
            "protocol": listener.protocol,
            "backend": listener.backend,
            "listening": (row or {}).get("status") == "OPEN",
            "active": _int(row, "scur"),
            "accepted": _int(row, "stot"),
            "refused": _int(row, "dcon") + _int(row, "dses") + _int(row, "dreq"),
        }
        if listener.http is not None:
            entry["requests"] = _int(row, "req_tot")
            entry["routes"] = route_entries(listener)
        out.append(entry)
    return out
