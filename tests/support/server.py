"""`anycastedge serve` as a throwaway subprocess on loopback, for integration tests.

``running_server(zones_dir)`` picks free ports on 127.0.0.1, starts ``python -m anycastedge serve``
with its output in a log file, waits (bounded poll) until DNS answers, and on exit sends SIGTERM to
that one PID, killing it only if it does not stop within a bounded wait. Nothing here sends a
packet anywhere but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.procs import free_port, stop_process

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
REPO_ZONES = REPO / "zones"
#: The POP name the generated minimal pop.yaml gives the server (NSID, CHAOS id.server, /status).
DEFAULT_POP = "itest-pop"

T = TypeVar("T")


class ServerError(RuntimeError):
    """The server could not be started, or exited when it should be running."""


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # poll interval of a bounded poll, not a synchronisation delay


def copy_repo_zones(target: Path) -> Path:
    """Copy the repo's zones/ to ``target`` (which must not exist yet) and return it."""
    shutil.copytree(REPO_ZONES, target)
    return target


def port_is_free(port: int, host: str = HOST, udp: bool = True, tcp: bool = True) -> bool:
    """Whether ``host``:``port`` can be bound right now (UDP and/or TCP)."""
    kinds = ([socket.SOCK_DGRAM] if udp else []) + ([socket.SOCK_STREAM] if tcp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def zone_names(zones_dir: Path) -> list[str]:
    """The zones a directory of ``<zone>.yaml`` files holds, sorted."""
    return sorted(
        p.name[: -len(p.suffix)].rstrip(".") + "."
        for p in Path(zones_dir).iterdir()
        if p.suffix in (".yaml", ".yml")
    )


@dataclass
class ServerHandle:
    """A running ``anycastedge serve`` subprocess and how to talk to it."""

    process: subprocess.Popen[bytes]
    dns_port: int
    control_port: int | None
    log_path: Path
    workdir: Path
    zones_dir: Path | None = None
    pop: str | None = None
    host: str = HOST
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """PID of the server process (the one we signal and terminate)."""
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.dns_port

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM this one PID; SIGKILL it only if it is still running after ``timeout`` s."""
        stop_process(self.process, timeout)
        return int(self.process.returncode)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the server's PID (and only to it)."""
        if not self.alive():
            raise ServerError(f"server exited with {self.process.returncode}:\n{self.log_text()}")
        os.kill(self.pid, sig)

    def sighup(self) -> None:
        """Ask the server to reload its zones."""
        self.send_signal(signal.SIGHUP)

    # DNS ---------------------------------------------------------------------------------------

    def query(
        self,
        qname: str,
        rdtype: str | int = "A",
        *,
        tcp: bool = False,
        timeout: float = 2.0,
        **make_query: Any,
    ) -> dns.message.Message:
        """One dnspython query over real UDP (or TCP) to the server."""
        message = dns.message.make_query(qname, rdtype, **make_query)
        if tcp:
            return dns.query.tcp(message, self.host, port=self.dns_port, timeout=timeout)
        return dns.query.udp(message, self.host, port=self.dns_port, timeout=timeout)

    def soa_serial(self, zone: str) -> int:
        """The SOA serial the server answers for ``zone`` right now."""
        reply = self.query(zone, "SOA")
        if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
            raise AssertionError(f"no SOA for {zone}: {reply}")
        return int(reply.answer[0][0].serial)

    # Control endpoint --------------------------------------------------------------------------

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``path`` from the control endpoint: (status, body)."""
        if self.control_port is None:
            raise ServerError("this server has no control endpoint")
        conn = http.client.HTTPConnection(self.host, self.control_port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        """The /status JSON document."""
        code, body = self.http_get("/status")
        if code != 200:
            raise AssertionError(f"/status answered {code}: {body}")
        document: dict[str, Any] = json.loads(body)
        return document

    def metrics(self) -> str:
        """The /metrics text."""
        code, body = self.http_get("/metrics")
        if code != 200:
            raise AssertionError(f"/metrics answered {code}: {body}")
        return body

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        return metric_value(self.metrics(), name, **labels)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` in Prometheus text whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]


def minimal_pop_yaml(
    directory: Path, pop: str = DEFAULT_POP, dns: Mapping[str, Any] | None = None
) -> Path:
    """Write a minimal pop.yaml naming the POP (plus ``dns`` settings) and return its path.

    GSLB health checks are confined to loopback (``dns.check_networks``) unless ``dns`` says
    otherwise: zones from elsewhere (octoDNS's own test zones) name values anywhere.
    """
    lines = [f"pop: {json.dumps(pop)}", f"state_dir: {json.dumps(str(directory / 'state'))}"]
    settings = {"check_networks": LOOPBACK_NETWORKS, **(dns or {})}
    lines.append("dns:")
    lines += [f"  {key}: {json.dumps(value)}" for key, value in settings.items()]
    path = directory / "pop.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _probe(handle: ServerHandle, zone: str | None) -> bool:
    """One readiness probe: the SOA of ``zone`` answers with AA (or, without a zone, anything)."""
    try:
        if zone is None:
            handle.query("readiness.probe.invalid.", "A", timeout=0.2)
            return True
        reply = handle.query(zone, "SOA", timeout=0.2)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.flags & dns.flags.AA)


def _control_up(handle: ServerHandle) -> bool:
    try:
        handle.http_get("/healthz", timeout=0.5)
    except OSError:
        return False
    return True


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_server(
    args: Sequence[str],
    *,
    dns_port: int,
    control_port: int | None,
    probe_zone: str | None,
    cwd: Path,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 20.0,
    zones_dir: Path | None = None,
    pop: str | None = None,
    python: str = sys.executable,
) -> ServerHandle:
    """Start ``python -m anycastedge <args>`` as given; return once DNS (and control) answer.

    On failure the process is stopped and ServerError (with the server's log) is raised.
    """
    log_path = workdir / f"serve-{dns_port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python, "-m", "anycastedge", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=_clean_env(env),
        )
    handle = ServerHandle(
        process, dns_port, control_port, log_path, workdir, zones_dir, pop, args=list(args)
    )
    try:
        wait_for(
            lambda: _probe(handle, probe_zone) or not handle.alive(),
            startup_timeout,
            f"anycastedge serve to answer on {HOST}:{dns_port}",
        )
        if not handle.alive():
            raise ServerError(
                f"anycastedge serve exited with {process.returncode} before answering:\n"
                f"{handle.log_text()}"
            )
        if control_port is not None:
            wait_for(
                lambda: _control_up(handle) or not handle.alive(),
                startup_timeout,
                "the control endpoint",
            )
            if not handle.alive():
                raise ServerError(f"anycastedge serve exited:\n{handle.log_text()}")
    except TimeoutError as error:
        handle.stop()
        raise ServerError(f"{error}\n{handle.log_text()}") from None
    except BaseException:
        handle.stop()
        raise
    return handle


@contextlib.contextmanager
def serving(handle: ServerHandle) -> Iterator[ServerHandle]:
    """Yield ``handle``; stop its process afterwards, showing its log if the body failed."""
    try:
        yield handle
    except BaseException:
        handle.stop()
        sys.stderr.write(
            f"--- anycastedge serve log ({handle.log_path}) ---\n{handle.log_text()}\n"
        )
        raise
    finally:
        handle.stop()


def _bind_failed(error: ServerError) -> bool:
    text = str(error)
    return "CannotListenError" in text or "Address already in use" in text


@contextlib.contextmanager
def running_server(
    zones_dir: Path | str,
    *,
    config: Path | str | None = None,
    extra_args: Sequence[str] = (),
    pop: str = DEFAULT_POP,
    probe_zone: str | None = None,
    startup_timeout: float = 20.0,
) -> Iterator[ServerHandle]:
    """``anycastedge serve`` on fresh loopback ports, serving ``zones_dir``.

    ``config`` is passed as ``-c``; without it a minimal pop.yaml naming the POP ``pop`` is
    written, so that neither $ANYCASTEDGE_CONFIG nor /etc/anycastedge/pop.yaml can leak into a test.
    ``--zones``, ``--listen`` and ``--control`` always point at ``zones_dir`` and the picked ports.
    The server is ready when the SOA of ``probe_zone`` (default: the first zone in ``zones_dir``)
    answers with AA, or, for an empty directory, when DNS answers at all.
    """
    zones_dir = Path(zones_dir).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="anycastedge-serve-"))
    if probe_zone is None:
        names = zone_names(zones_dir)
        probe_zone = names[0] if names else None
    try:
        config_path = Path(config).resolve() if config else minimal_pop_yaml(workdir, pop)
        attempts = 3  # a port picked here can be taken by someone else before the server binds it
        for attempt in range(attempts):
            dns_port = free_port(HOST)
            control_port = free_port(HOST)
            while control_port == dns_port:
                control_port = free_port(HOST)
            args = [
                "serve",
                "-c",
                str(config_path),
                "--zones",
                str(zones_dir),
                "--listen",
                f"{HOST}:{dns_port}",
                "--control",
                f"{HOST}:{control_port}",
                *extra_args,
            ]
            try:
                handle = start_server(
                    args,
                    dns_port=dns_port,
                    control_port=control_port,
                    probe_zone=probe_zone,
                    cwd=workdir,
                    workdir=workdir,
                    startup_timeout=startup_timeout,
                    zones_dir=zones_dir,
                    pop=None if config else pop,
                )
            except ServerError as error:
                if attempt + 1 == attempts or not _bind_failed(error):
                    raise
                continue
            with serving(handle):
                yield handle
            return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
