"""serve started as root binds below 1024, then runs as the configured user; a user that does
not exist stops start-up naming the key. (Root only: skipped otherwise.)"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.http_backend import endpoints
from tests.support.procs import children, free_port, gone
from tests.support.server import REPO_ZONES, port_is_free, serving, start_server, wait_for

POLL = 20.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping privileges needs serve started as root"
)


@pytest.fixture
def world_readable() -> Iterator[Path]:
    """A directory the dropped user can read (pytest's own are root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="anycastedge-priv-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _low_port() -> int:
    port = next((p for p in range(990, 600, -1) if port_is_free(p)), None)
    if port is None:
        pytest.skip("no free port below 1024 on 127.0.0.1")
    return port


def _pop_yaml(directory: Path, port: int, user: str) -> Path:
    zones = directory / "zones"
    shutil.copytree(REPO_ZONES, zones)
    path = directory / "pop.yaml"
    path.write_text(
        f"pop: priv\nuser: {user}\nstate_dir: {directory / 'state'}\n"
        f"dns: {{listen: ['127.0.0.1:{port}'], zones: {zones}, check_networks: [127.0.0.0/8]}}\n"
        "control: null\n"
    )
    return path


def _ids(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return {"uid": fields["Uid"], "gid": fields["Gid"], "caps": fields["CapEff"][0]}  # type: ignore[dict-item]


def test_serve_runs_as_the_configured_user_and_answers_below_1024(world_readable: Path) -> None:
    """`user: nobody`: every uid and gid of the process is nobody's, no capability is left,
    the state directory is nobody's, and dig gets answers on the port below 1024."""
    nobody = pwd.getpwnam("nobody")
    port = _low_port()
    config = _pop_yaml(world_readable, port, "nobody")
    where = {"cwd": world_readable, "workdir": world_readable}
    handle = start_server(["serve", "-c", str(config)], dns_port=port, control_port=None,
                          probe_zone="example.com.", **where)  # fmt: skip
    with serving(handle):
        ids = _ids(handle.pid)
        assert ids["uid"] == [str(nobody.pw_uid)] * 4 and ids["gid"] == [str(nobody.pw_gid)] * 4
        assert int(ids["caps"], 16) == 0
        assert (world_readable / "state").stat().st_uid == nobody.pw_uid
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "example.com", "SOA", "+norec"],
                             capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        assert "status: NOERROR" in out and " aa" in out.split("flags:")[1].split(";")[0]
        assert "running as nobody" in handle.log_text()


def test_a_user_that_does_not_exist_stops_start_up(world_readable: Path) -> None:
    """A configured user missing on the host: exit 1, naming `user` and the name."""
    config = _pop_yaml(world_readable, _low_port(), "no-such-user-here")
    result = subprocess.run([sys.executable, "-m", "anycastedge", "serve", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "user: no such user 'no-such-user-here'" in result.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (make test installs it)")
def test_haproxy_engine_runs_its_workers_as_the_configured_user(world_readable: Path) -> None:
    """engine: haproxy with `user: nobody`: HAProxy binds the port below 1024 (started before
    serve drops root), its workers run as nobody, and serve, as nobody, still reads its
    statistics, receives its access log lines and reloads it (its files and sockets are
    nobody's)."""
    nobody = pwd.getpwnam("nobody")
    web = _low_port()
    dns_port, control_port = free_port(), free_port()
    with endpoints("a") as (endpoint,):
        config = _pop_yaml(world_readable, dns_port, "nobody")
        forward = (
            "forward:\n  engine: haproxy\n  listeners:\n"
            f"    web: {{bind: '127.0.0.1:{web}', protocol: http, access_log: '-', "
            "routes: [{backend: app}]}\n"
            "  backends:\n    app:\n      healthcheck: {kind: tcp, interval: 0.2}\n"
            f"      endpoints: [{{address: '127.0.0.1:{endpoint.server_port}'}}]\n"
        )
        control = f"control: {{listen: '127.0.0.1:{control_port}'}}\n"
        text = config.read_text().replace("control: null\n", control)
        config.write_text(text + forward)
        where = {"cwd": world_readable, "workdir": world_readable}
        handle = start_server(["serve", "-c", str(config)], dns_port=dns_port,
                              control_port=control_port, probe_zone="example.com.",
                              **where)  # fmt: skip
        with serving(handle):
            def usable() -> bool:
                forward = handle.status()["forward"]
                return bool(forward["backends"][0]["endpoints"][0]["usable"])

            wait_for(usable, POLL, "HAProxy's statistics, read by serve as nobody")
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/x", timeout=POLL) as reply:
                assert reply.status == 200
            master = handle.status()["forward"]["engine"]["pid"]
            workers = children(master)
            for pid in (master, *workers):  # all nobody's: serve, as nobody, may signal them
                assert _ids(pid)["uid"] == [str(nobody.pw_uid)] * 4
            wait_for(lambda: '"GET /x"' in handle.log_text(), POLL, "the access log line")
            config.write_text(config.read_text().replace("interval: 0.2", "interval: 0.3"))
            handle.sighup()
            wait_for(lambda: handle.status()["forward"]["engine"]["reloads"]["success"] == 1,
                     POLL, "the reload, done by serve as nobody")  # fmt: skip
            # The master rebound the port below 1024 at the reload: its capability kept.
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/y", timeout=POLL) as reply:
                assert reply.status == 200
            # serve killed: HAProxy ends too (its death signal comes from serve, as nobody).
            handle.process.kill()
            handle.process.wait(timeout=POLL)
            wait_for(lambda: gone(master), POLL, "HAProxy's master to end with serve")
