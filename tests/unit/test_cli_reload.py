"""`anycastedge reload` with DNS workers: what it says when serve reloaded and a worker did not."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from anycastedge.cli import main


def process(index: int, ok: bool | None, generation: int, alive: bool = True) -> dict[str, Any]:
    last = None if ok is None else {"at": 0.0, "ok": ok, "trigger": "control",
                                    "problems": [] if ok else ["z.yaml, line 3: bad"]}  # fmt: skip
    return {"index": index, "pid": 100 + index, "alive": alive, "restarts": 0, "queries": 0,
            "counters_age_seconds": 0.0, "generation": generation, "health_version": 0,
            "last_reload": last, "serials": {}}  # fmt: skip


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only --control counts: no pop.yaml from the environment."""
    monkeypatch.delenv("ANYCASTEDGE_CONFIG", raising=False)


@contextmanager
def control(status: int, body: dict[str, Any]) -> Iterator[int]:
    """A loopback stand-in for serve's POST /reload answering ``body``; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_all_processes_reloaded(capsys: pytest.CaptureFixture[str]) -> None:
    body = {"ok": True, "problems": [], "processes": [process(0, True, 3), process(1, True, 3)]}
    with control(200, body) as port:
        assert main(["reload", "--control", f"127.0.0.1:{port}"]) == 0
    assert capsys.readouterr().out == "reloaded by 2 DNS processes\n"


def test_the_workers_that_did_not_reload_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    processes = [process(0, True, 3), process(1, False, 3), process(2, True, 2),
                 process(3, None, 1, alive=False), process(4, True, 3)]  # fmt: skip
    with control(422, {"ok": False, "problems": [], "processes": processes}) as port:
        assert main(["reload", "--control", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "reloaded by serve, but not by every DNS worker:",
        "- dns worker 1 (pid 101): rejected the zones, serves the previous ones: "
        "z.yaml, line 3: bad",
        "- dns worker 2 (pid 102): no answer yet (still reloading?)",
        "- dns worker 3 (pid 103): not running",
        "- dns worker 4 (pid 104): reloaded",
    ]


def test_serve_rejecting_is_reported_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    body = {"ok": False, "problems": ["z.yaml, line 3: bad"],
            "processes": [process(0, False, 3), process(1, True, 3)]}  # fmt: skip
    with control(422, body) as port:
        assert main(["reload", "--control", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "reload rejected, the previous zones keep serving:",
        "- z.yaml, line 3: bad",
    ]
