"""``forward.engine: haproxy``: serve renders the forwarding config for HAProxy and runs it.

HAProxy runs in master-worker mode, started (and restarted, within bounds) by the shared
``Supervisor``. A forwarding change is rendered, checked with ``haproxy -c`` and handed over by
the master CLI's ``reload``: the master starts new workers on the same listening sockets and the
old ones finish their connections (bounded by ``hard-stop-after``). Serve reads HAProxy's
statistics every second, so /status, /metrics and the POP-health URL show the same listeners,
backends and endpoints as with the built-in engine; statistics it cannot read count as every
endpoint down (fail closed). HAProxy's access log lines reach serve over UNIX datagram sockets
and are written where pop.yaml's ``access_log`` says.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger

from anycastedge.errors import ConfigError, Problem
from anycastedge.forward.access_logs import AccessLogs
from anycastedge.forward.haproxy_files import (
    CHECK_ARGS,
    check_config,
    check_words,
    replace_file,
    write_rendered,
    write_support,
)
from anycastedge.forward.haproxy_render import Rendered, Runtime, render
from anycastedge.forward.haproxy_stats import Stats, backend_views, listener_entries, parse_stat
from anycastedge.forward.model import ForwardConfig
from anycastedge.forward.view import BackendView, critical_down
from anycastedge.supervise import Launch, Supervisor

log = Logger()

STATS_INTERVAL = 1.0  # seconds between reads of HAProxy's statistics
# Statistics older than this count as none (every endpoint down): HAProxy is not answering.
STATS_STALE = 5.0
ASK_TIMEOUT = 5.0  # seconds a question to a HAProxy socket may take
RELOAD_WAIT = 15.0  # seconds a reload has to show a new worker in the master's `show proc`
_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE = 47, 2
_CAP_NET_BIND_SERVICE = 10
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


def _preexec(user: pwd.struct_passwd | None) -> Callable[[], None]:
    """What HAProxy's process does before exec.

    With ``user`` (serve runs as root and will switch to it): become that user, keeping only
    CAP_NET_BIND_SERVICE (ambient, so HAProxy binds ports below 1024 and still can at its
    reloads). HAProxy then runs as the user serve becomes, so serve can still signal it: a
    root HAProxy could outlive serve, whose signals (its death signal too) it would refuse.

    Then, always: SIGTERM when serve dies, however it dies (a SIGKILLed serve must not leave
    HAProxy holding the POP's listeners); set last, as a change of identity clears it.
    """

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if user is not None:
            os.initgroups(user.pw_name, user.pw_gid)
            libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0)
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            bit = 1 << _CAP_NET_BIND_SERVICE
            header = _CapHeader(_CAP_VERSION_3, 0)
            data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
            if libc.capset(ctypes.byref(header), data) != 0:
                raise OSError(ctypes.get_errno(), "capset")
            if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_NET_BIND_SERVICE, 0, 0):
                raise OSError(ctypes.get_errno(), "PR_CAP_AMBIENT_RAISE")
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return run


class _Quiet(protocol.Factory):
    """A factory that does not log every connection (statistics are read every second)."""

    noisy = False


class _Collect(protocol.Protocol):
    """Sends one command to a HAProxy socket and collects the answer until it closes."""

    def __init__(self, command: bytes) -> None:
        self.command = command
        self.chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.write(self.command)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if not self.done.called:
            self.done.callback(b"".join(self.chunks))


def ask(reactor: Any, path: str, command: str) -> Deferred[bytes]:
    """What HAProxy answers ``command`` on the UNIX socket at ``path``."""
    # The master CLI keeps a connection open after answering unless told to quit.
    collect = _Collect(command.encode() + b";quit\n")
    factory = _Quiet.forProtocol(lambda: collect)
    connecting = UNIXClientEndpoint(reactor, path, timeout=ASK_TIMEOUT).connect(factory)

    def connected(proto: _Collect) -> Deferred[bytes]:
        return proto.done

    answer = connecting.addCallback(connected)
    answer.addTimeout(ASK_TIMEOUT, reactor)
    return answer


def worker_pids(show_proc: str) -> set[int]:
    """The current workers' PIDs in the master CLI's ``show proc`` (not the old ones')."""
    pids: set[int] = set()
    section = ""
    for line in show_proc.splitlines():
        if line.startswith("#"):
            section = line
            continue
        fields = line.split()
        if "old" not in section and len(fields) > 1 and fields[1] == "worker":
            if fields[0].isdigit():
                pids.add(int(fields[0]))
    return pids


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The last forwarding change handed to HAProxy."""

    ok: bool
    at: float  # time.time()
    message: str

    def as_json(self) -> dict[str, Any]:
        """As /status shows it."""
        return {"ok": self.ok, "at": self.at, "message": self.message}


class _LogReceiver(protocol.DatagramProtocol):
    """HAProxy's access log lines (format raw) for one access_log target."""

    noisy = False

    def __init__(self, logs: AccessLogs, target: str) -> None:
        self.logs, self.target = logs, target

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        self.logs.get(self.target).raw(datagram.decode("utf-8", "replace").rstrip("\n"))


class HaproxyEngine(service.MultiService):
    """Runs HAProxy for a ForwardConfig and shows it as the built-in engine shows itself."""

    def __init__(
        self,
        config: ForwardConfig,
        runtime: Runtime,
        reactor: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.config = config
        self.runtime = runtime
        self.reactor = reactor
        self.clock = clock
        self.stats: Stats | None = None
        self.stats_at = float("-inf")
        # The master whose workers answered them: a restarted HAProxy has none yet (it may not
        # even listen), whatever the one before it said a moment ago.
        self.stats_pid: int | None = None
        self.last_reload: ReloadOutcome | None = None
        self.reloads = {"success": 0, "failure": 0}
        self.access_logs = AccessLogs()
        self._log_ports: dict[str, Any] = {}  # socket path -> listening port
        self._rendered: Rendered | None = None
        self._pending: ForwardConfig | None = None
        self._reloading = False
        self.supervisor = Supervisor(
            2, self._launch, reactor, os.getpid(), label="haproxy", at_once=True
        )
        self.supervisor.setServiceParent(self)
        self._poller = task.LoopingCall(self.poll)
        self._poller.clock = reactor
        self._flusher = task.LoopingCall(self.access_logs.flush)
        self._flusher.clock = reactor

    # --- the process

    def prepare(self) -> None:
        """Render and write the configuration and have HAProxy check it (before start);
        ConfigError with HAProxy's words if it refuses."""
        rendered = render(self.config, self.runtime)
        write_rendered(rendered, self.runtime)
        # Written as root: serve goes on as runtime.user, and rewrites them at reloads.
        for path in [Path(self.runtime.directory), *Path(self.runtime.directory).rglob("*")]:
            self._own(path)
        ok, output = check_config(self.config.haproxy.binary, self.runtime.config_path)
        if not ok:
            raise ConfigError([Problem(f"haproxy -c refused the rendered configuration "
                                       f"({self.runtime.config_path}): {output}")])  # fmt: skip
        self._rendered = rendered

    def _own(self, path: Path) -> None:
        """Hand ``path`` to runtime.user when serve runs as root and will switch to it."""
        if self.runtime.user and os.geteuid() == 0:
            user = pwd.getpwnam(self.runtime.user)
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def command(self) -> list[str]:
        """HAProxy's command line: master-worker, its master CLI, the rendered file."""
        master = f"{self.runtime.master_socket},mode,600"
        if self.runtime.user:
            master += f",user,{self.runtime.user}"
        return [self.config.haproxy.binary, "-W", "-S", master, "-f", self.runtime.config_path]

    def _launch(self, index: int) -> Launch:
        # Started as root (before serve switches): as the user serve becomes; restarted later
        # by serve, HAProxy is that user already.
        as_root = self.runtime.user is not None and os.geteuid() == 0
        user = pwd.getpwnam(self.runtime.user) if as_root and self.runtime.user else None
        return Launch(self.command(), (), preexec=_preexec(user))

    def alive(self) -> bool:
        """Whether HAProxy's master runs."""
        return self.supervisor.workers[0].alive()

    # --- reloads

    def apply(self, config: ForwardConfig) -> None:
        """Serve ``config`` from now on: rendered, checked and reloaded (one at a time; the
        latest waiting change wins)."""
        self._pending = config
        if not self._reloading:
            self._next()

    def _next(self) -> None:
        config, self._pending = self._pending, None
        if config is None:
            self._reloading = False
            return
        self._reloading = True
        d = defer.ensureDeferred(self._reload(config))
        d.addErrback(lambda f: log.failure("haproxy reload", f))
        d.addBoth(lambda _: self._next())

    async def _reload(self, config: ForwardConfig) -> None:
        rendered = render(config, self.runtime)
        # Certificates are read anew: a renewed one changes a bundle, not the configuration.
        renewed = write_support(rendered, self.runtime)
        if rendered == self._rendered and not renewed:
            self.config = config  # nothing HAProxy runs differs
            if not self.alive():
                # Given up on, perhaps for something outside pop.yaml (a port taken): a reload
                # is the operator's word that it may have been fixed.
                self.supervisor.revive()
            return
        candidate = self.runtime.config_path + ".next"
        replace_file(Path(candidate), rendered.config.encode(), 0o644)
        out, err, code = await getProcessOutputAndValue(
            config.haproxy.binary, [*CHECK_ARGS, candidate], env=os.environ,
            reactor=self.reactor,
        )  # fmt: skip
        if code != 0:
            Path(candidate).unlink(missing_ok=True)
            words = check_words((out + err).decode(errors="replace"))
            self._reloaded(False, f"haproxy -c refused it, still running the previous: {words}")
            return
        os.replace(candidate, self.runtime.config_path)
        self._rendered, self.config = rendered, config
        self._sync_log_sockets()
        if not self.alive():
            # Perhaps it kept exiting on the previous configuration: try this one.
            self.supervisor.revive()
            self._reloaded(True, "written; HAProxy was not running: started with this one")
            return
        before = await self._workers()
        try:
            await ask(self.reactor, self.runtime.master_socket, "reload")
        except Exception as exc:  # noqa: BLE001 - any failure to reach the master is reported
            self._reloaded(False, f"master CLI reload failed: {exc}")
            return
        deadline = self.clock() + RELOAD_WAIT
        while self.clock() < deadline:
            await task.deferLater(self.reactor, 0.1, lambda: None)
            now = await self._workers()
            if now - before:
                # Read at once: until then the old workers' statistics would be read onto the
                # new configuration's endpoints, by index.
                await self.poll()
                self._reloaded(True, f"reloaded: new worker(s) {sorted(now - before)}")
                return
        self._reloaded(False, f"no new HAProxy worker within {RELOAD_WAIT:g} s of the reload "
                       "(its log says why); the previous workers go on")  # fmt: skip

    async def _workers(self) -> set[int]:
        try:
            answer = await ask(self.reactor, self.runtime.master_socket, "show proc")
        except Exception:  # noqa: BLE001 - a master not answering has no workers to show
            return set()
        return worker_pids(answer.decode(errors="replace"))

    def _reloaded(self, ok: bool, message: str) -> None:
        self.last_reload = ReloadOutcome(ok, time.time(), message)
        self.reloads["success" if ok else "failure"] += 1
        if ok:
            log.info("haproxy: {message}", message=message)
        else:
            log.error("haproxy: {message}", message=message)

    # --- access logs

    def _sync_log_sockets(self) -> None:
        """Listen on the rendered log sockets (each once), and on no other."""
        wanted = dict(self._rendered.log_sockets) if self._rendered is not None else {}
        for path in [p for p in self._log_ports if p not in wanted]:
            self._log_ports.pop(path).stopListening()
        for path, target in wanted.items():
            if path in self._log_ports:
                self._log_ports[path].protocol.target = target
                continue
            Path(path).unlink(missing_ok=True)  # a socket file left by an earlier serve
            port = self.reactor.listenUNIXDatagram(path, _LogReceiver(self.access_logs, target))
            self._own(Path(path))  # HAProxy's workers, as runtime.user, send to it
            self._log_ports[path] = port

    # --- statistics

    def poll(self) -> Deferred[None]:
        """Read HAProxy's statistics (once a second)."""

        pid = self.supervisor.workers[0].pid  # asked now: the answer is this master's
        d = ask(self.reactor, self.runtime.stats_socket, "show stat")
        return d.addCallbacks(self.took_stats, lambda failure: None, callbackArgs=(pid,))

    def took_stats(self, answer: bytes, pid: int | None) -> None:
        """``show stat``'s answer, asked while ``pid`` was HAProxy's master."""
        try:
            self.stats = parse_stat(answer.decode(errors="replace"))
        except ValueError:
            return
        self.stats_at, self.stats_pid = self.clock(), pid

    def fresh_stats(self) -> Stats | None:
        """The statistics if HAProxy runs and answered lately (the HAProxy running now, not
        one before a restart), else None."""
        worker = self.supervisor.workers[0]
        if not worker.alive() or self.stats_pid != worker.pid:
            return None
        if self.clock() - self.stats_at > STATS_STALE:
            return None
        return self.stats

    def backend_views(self) -> list[BackendView]:
        """Every backend's endpoints, health and counters, as HAProxy reports them."""
        return backend_views(self.config, self.fresh_stats())

    def listener_entries(self) -> list[dict[str, Any]]:
        """Every listener with its frontend's counters (/status)."""
        return listener_entries(self.config, self.fresh_stats())

    def critical_down(self) -> list[str]:
        """Critical backends with no endpoint taking new traffic (all, without statistics)."""
        return critical_down(self.backend_views())

    def backend_up(self, name: str) -> bool | None:
        """Whether backend ``name`` has an endpoint taking new traffic (None: no such backend)."""
        for view in self.backend_views():
            if view.name == name:
                return view.up
        return None

    def health_problems(self) -> list[str]:
        """Why the POP should not be announced for forwarding: HAProxy not running or not
        answering, or a critical backend down."""
        problems = []
        if not self.alive():
            problems.append("haproxy is not running")
        elif self.fresh_stats() is None:
            problems.append(f"haproxy has not answered for statistics in {STATS_STALE:g} s")
        down = self.critical_down()
        if down:
            problems.append(f"critical backends down: {', '.join(down)}")
        return problems

    def engine_status(self) -> dict[str, Any]:
        """The HAProxy process as /status shows it."""
        worker = self.supervisor.workers[0]
        age = self.clock() - self.stats_at
        return {
            "name": "haproxy",
            "pid": worker.pid,
            "running": worker.alive(),
            "restarts": worker.restarts,
            "given_up": worker.given_up,
            "config": self.runtime.config_path,
            "stats_age_seconds": round(age, 3) if age != float("inf") else None,
            "reloads": dict(self.reloads),
            "last_reload": self.last_reload.as_json() if self.last_reload else None,
        }

    # --- the service

    def startService(self) -> None:  # noqa: N802
        if self._rendered is None:
            self.prepare()
        self._sync_log_sockets()
        super().startService()  # the supervisor starts HAProxy now
        self._poller.start(STATS_INTERVAL, now=False)
        self._flusher.start(1.0, now=False)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        for loop in (self._poller, self._flusher):
            if loop.running:
                loop.stop()
        for port in self._log_ports.values():
            port.stopListening()
        self._log_ports = {}
        self.access_logs.close()
        return super().stopService()
