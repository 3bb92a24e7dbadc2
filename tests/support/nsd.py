"""NSD as a reference peer: octoDNS YAML -> RFC 1035 zone file, and a throwaway NSD on loopback.

Nothing here imports anycastedge: the zone file is written by octoDNS itself (YamlProvider source,
octodns-bind's ZoneFileProvider target, run through ``octodns-sync``), so NSD serves what octoDNS
understands the YAML to mean, not what our loader thinks it means.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.procs import free_port, stop_process

#: The id octoDNS sees for our target. It matters for records with ``octodns.included`` /
#: ``octodns.excluded`` provider lists: they are kept or dropped as for a provider of this name.
TARGET_ID = "anycastedge"

#: The SOA block octodns-bind 1.x writes (its template, see octodns_bind.ZoneFileProvider._apply).
_SOA_BLOCK = re.compile(r"^@ \d+ IN SOA [^\n]*\(\n(?:[^\n]*\n)*?\)\n", re.MULTILINE)


class NsdError(RuntimeError):
    """NSD could not be found, configured or started."""


class NsdNotInstalled(NsdError):
    """The nsd binary is not installed (Debian package `nsd`)."""


def zone_yaml_to_bind(
    zones_dir: Path,
    zone: str,
    out_dir: Path,
    *,
    soa: str | None = None,
    soa_ttl: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Write ``zones_dir/<zone>.yaml`` as the RFC 1035 zone file ``out_dir/<zone>.zone``.

    octoDNS does the conversion. Records octodns-bind cannot write (URLFWD, DNAME, ALIAS, ...) are
    dropped with a warning, ``dynamic``/``geo`` records keep only their default values, and the
    file gets octodns-bind's synthesized SOA (first apex NS in sorted order, ``webmaster.<zone>``,
    the current Unix time as serial, 3600/600/604800/3600 timers, TTL 3600). ``soa`` (rdata text:
    ``mname rname serial refresh retry expire minimum``) and ``soa_ttl`` replace that SOA, so a peer
    can be given exactly the SOA of the server it is compared with.
    """
    zone = zone if zone.endswith(".") else f"{zone}."
    files = zones_yaml_to_bind(zones_dir, {zone: (soa, soa_ttl)}, out_dir, timeout=timeout)
    return files[zone]


def zones_yaml_to_bind(
    zones_dir: Path,
    zones: Mapping[str, tuple[str | None, int | None]],
    out_dir: Path,
    *,
    timeout: float = 120.0,
) -> dict[str, Path]:
    """Like :func:`zone_yaml_to_bind` for several zones in one ``octodns-sync`` run.

    ``zones`` maps each zone name to its ``(soa, soa_ttl)`` replacement (``None`` keeps
    octodns-bind's); returns zone name -> zone file.
    """
    src = Path(zones_dir).resolve()
    wanted = {(z if z.endswith(".") else f"{z}."): soa for z, soa in zones.items()}
    for zone in wanted:
        if not (src / f"{zone[:-1]}.yaml").is_file():
            raise FileNotFoundError(src / f"{zone[:-1]}.yaml")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(wanted))[:-1] if len(wanted) == 1 else "batch"
    config = out / f"octodns-{first}.yaml"
    # JSON-style flow mappings are valid YAML and need no yaml dependency here.
    config.write_text(
        "providers:\n"
        f"  yaml: {{class: octodns.provider.yaml.YamlProvider, directory: '{src}',"
        " enforce_order: false}\n"
        f"  {TARGET_ID}: {{class: octodns_bind.ZoneFileProvider, directory: '{out}',"
        " file_extension: .zone, strict_supports: false}\n"
        "zones:\n"
        + "".join(f"  '{zone}': {{sources: [yaml], targets: [{TARGET_ID}]}}\n" for zone in wanted)
    )
    sync = Path(sys.executable).with_name("octodns-sync")
    cmd = [str(sync)] if sync.exists() else [sys.executable, "-m", "octodns.cmds.sync"]
    proc = subprocess.run(
        [*cmd, "--config-file", str(config), "--doit", "--force", *wanted],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=out,
    )
    files: dict[str, Path] = {}
    for zone, (soa, soa_ttl) in wanted.items():
        target = out / f"{zone[:-1]}.zone"
        if proc.returncode != 0 or not target.is_file():
            raise NsdError(
                f"octodns-sync failed for {zone} (exit {proc.returncode}):\n{proc.stderr}"
            )
        if soa is not None or soa_ttl is not None:
            _replace_soa(target, soa, soa_ttl)
        files[zone] = target
    return files


def _replace_soa(path: Path, soa: str | None, ttl: int | None) -> None:
    text = path.read_text()
    match = _SOA_BLOCK.search(text)
    if match is None:
        raise NsdError(f"{path}: no octodns-bind SOA block found to replace")
    head = match.group(0).split(" IN SOA ", 1)
    old_ttl = head[0].split()[1]
    if soa is None:
        fields = re.findall(r"^\s*(\d+) ;", match.group(0), re.MULTILINE)
        soa = " ".join([*head[1].split("(", 1)[0].split(), *fields])
    line = f"@ {ttl if ttl is not None else old_ttl} IN SOA {soa}\n"
    path.write_text(text[: match.start()] + line + text[match.end() :])


def find_nsd() -> str:
    """The path of the nsd binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nsd") or shutil.which("nsd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise NsdNotInstalled(NsdNotInstalled.__doc__)
    return found


def _in_pytest() -> bool:
    return "PYTEST_CURRENT_TEST" in os.environ and "pytest" in sys.modules


class NsdServer:
    """NSD serving ``zones`` (zone name -> zone file) on ``host``:``port`` over UDP and TCP.

    Used as a context manager: ``__enter__`` writes nsd.conf into a private directory, starts
    ``nsd -d`` (optionally pinned with ``taskset -c CPU``) and returns once every zone answers its
    SOA with AA; ``__exit__`` terminates that one process (NSD stops its own children) and removes
    the directory. Inside a running pytest test a missing nsd binary skips the test instead.
    """

    def __init__(
        self,
        zones: Mapping[str, Path],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        cpu: int | None = None,
        nsid: str | None = None,
        verbosity: int = 1,
        edns_size: int = 1232,
        options: Mapping[str, str] | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if not zones:
            raise ValueError("NsdServer needs at least one zone")
        self.zones = {(z if z.endswith(".") else f"{z}."): Path(f) for z, f in zones.items()}
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(host)
        self.cpu = cpu
        self.nsid = nsid
        self.verbosity = verbosity
        self.edns_size = edns_size
        self.options = dict(options or {})
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the nsd main process."""
        if self.process is None:
            raise NsdError("NSD is not running")
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def log_text(self) -> str:
        """What NSD logged so far (its log file in the private directory)."""
        if self.workdir is None or not (self.workdir / "nsd.log").exists():
            return ""
        return (self.workdir / "nsd.log").read_text(errors="replace")

    def config_text(self, workdir: Path) -> str:
        """The nsd.conf for this server; every file NSD writes lives in ``workdir``."""
        server = {
            "ip-address": f"{self.host}@{self.port}",
            "do-ip6": "no",
            "server-count": "1",
            "reuseport": "no",
            "username": '""',
            "chroot": '""',
            "database": '""',
            "zonesdir": f'"{workdir}"',
            "zonelistfile": f'"{workdir / "zone.list"}"',
            "xfrdfile": f'"{workdir / "xfrd.state"}"',
            "xfrdir": f'"{workdir}"',
            "pidfile": f'"{workdir / "nsd.pid"}"',
            "logfile": f'"{workdir / "nsd.log"}"',
            "verbosity": str(self.verbosity),
            "ipv4-edns-size": str(self.edns_size),
            "ipv6-edns-size": str(self.edns_size),
            # RRL is on by default and silently truncates (TC=1) under load: off for peers.
            "rrl-ratelimit": "0",
            "rrl-whitelist-ratelimit": "0",
        }
        if self.nsid is not None:
            server["nsid"] = f'"ascii_{self.nsid}"'
        server.update(self.options)
        lines = ["server:", *(f"    {k}: {v}" for k, v in server.items())]
        lines += ["remote-control:", "    control-enable: no"]
        for zone, path in self.zones.items():
            lines += ["zone:", f'    name: "{zone}"', f'    zonefile: "{path.resolve()}"']
        return "\n".join(lines) + "\n"

    def __enter__(self) -> NsdServer:
        try:
            nsd = find_nsd()
        except NsdNotInstalled as error:
            if _in_pytest():
                import pytest

                pytest.skip(str(error))
            raise
        # A port picked here may be taken by someone else before NSD binds it: pick again.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._start(nsd)
                return self
            except NsdError as error:
                self.__exit__(None, None, None)
                if attempt + 1 == attempts or "bind" not in str(error).lower():
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start(self, nsd: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="nsd-"))
        conf = self.workdir / "nsd.conf"
        conf.write_text(self.config_text(self.workdir))
        checkconf = Path(nsd).with_name("nsd-checkconf")
        if checkconf.exists():
            check = subprocess.run([str(checkconf), str(conf)], capture_output=True, text=True)
            if check.returncode != 0:
                raise NsdError(f"nsd-checkconf rejected {conf}:\n{check.stdout}{check.stderr}")
        cmd = [nsd, "-d", "-c", str(conf)]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        try:
            wait_until_answers(
                list(self.zones), self.host, self.port, self.startup_timeout, self.process
            )
        except (RuntimeError, TimeoutError) as error:
            raise NsdError(f"nsd: {error}\n{self.log_text}") from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def answers_soa(zone: str, host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether ``host``:``port`` answers ``zone`` SOA authoritatively over UDP (one try)."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        reply = dns.query.udp(query, host, port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.flags & dns.flags.AA)


def wait_until_answers(
    zones: Sequence[str],
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll (bounded by ``timeout``) until every zone's SOA is answered; fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    pending = list(zones)
    while pending:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SOA answer for {pending} on {host}:{port} within {timeout}s")
        if answers_soa(pending[0], host, port):
            pending.pop(0)
        else:
            time.sleep(interval)  # poll interval: a refused UDP query fails at once
