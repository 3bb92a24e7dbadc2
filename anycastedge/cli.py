"""The ``anycastedge`` command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anycastedge.config.pop import (
    DEFAULT_CONFIG_PATHS,
    ControlConfig,
    PopConfig,
    default_pop,
    load_pop,
    parse_loopback,
)
from anycastedge.config.reader import parse_hostport
from anycastedge.dns.rrl import CLASS_LABELS, RrlConfig
from anycastedge.errors import ConfigError, Location, Problem


def _hostport(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _loopback_hostport(text: str) -> tuple[str, int] | None:
    try:
        return parse_loopback(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("ANYCASTEDGE_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_CONFIG_PATHS:
        if Path(candidate).exists():
            return Path(candidate)
    return None


def _load_config(args: argparse.Namespace) -> PopConfig:
    path = _config_path(args.config)
    config = load_pop(path) if path else default_pop()
    dns = config.dns
    if args.zones:
        dns = dataclasses.replace(dns, zones=Path(args.zones))
    if args.listen:
        dns = dataclasses.replace(dns, listen=tuple(args.listen))
    config = dataclasses.replace(config, dns=dns)
    if args.control:
        config = dataclasses.replace(config, control=ControlConfig(listen=args.control))
    return config


def _print_problems(problems: Sequence[Problem], out: Any = sys.stderr) -> None:
    for p in problems:
        level = "WARNING" if p.warning else "ERROR"
        where = f"{p.location}: " if p.location else ""
        subject = f'"{p.subject}": ' if p.subject else ""
        print(f"{level} {where}{subject}{p.message}", file=out)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the DNS server (and control endpoint) until stopped."""
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from anycastedge.app import build_app
    from anycastedge.config.source import writable_by_others
    from anycastedge.dns.service import SHOWN
    from anycastedge.privileges import PrivilegeError, drop_privileges

    config = _load_config(args)
    app = build_app(config, reactor)
    _print_problems(app.warnings[:SHOWN])
    if len(app.warnings) > SHOWN:
        print(f"... and {len(app.warnings) - SHOWN} more warnings (`anycastedge zone check` lists "
              "them all)", file=sys.stderr)  # fmt: skip
    top = app.service

    def on_hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(app.reload, "SIGHUP")  # type: ignore[attr-defined]

    signal.signal(signal.SIGHUP, on_hup)
    try:
        top.startService()
    except CannotListenError as exc:
        print(f"cannot listen on {exc.interface}:{exc.port}: {exc.socketError}", file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)  # type: ignore[attr-defined]
    # Every socket is bound: nothing more needs root.
    try:
        identity = drop_privileges(config.user, config.state_dir)
    except (PrivilegeError, OSError) as exc:
        print(f"cannot drop privileges: {exc}", file=sys.stderr)
        return 1
    listen = " ".join(f"{h}:{p}" for h, p in config.dns.listen)
    control = config.control.listen
    where = f", control on {control[0]}:{control[1]}" if control else ""
    print(
        f"anycastedge {config.pop} (pid {os.getpid()}): DNS on {listen} (udp+tcp){where}"
        f"{'; ' + identity.note if identity.note else ''}",
        file=sys.stderr,
        flush=True,
    )
    if config.source is not None and (loose := writable_by_others(config.source)) is not None:
        _print_problems([loose])
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    reactor.run()  # type: ignore[attr-defined]
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask a running serve to reload its zones (POST /reload); print the outcome."""
    import json
    import urllib.error
    import urllib.request

    config = _load_config(args)
    if config.control.listen is None:
        print("control.listen is off: send SIGHUP to serve (its PID is in its first log line)",
              file=sys.stderr)  # fmt: skip
        return 1
    host, port = config.control.listen
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/reload"
    request = urllib.request.Request(url, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    except (OSError, ValueError) as exc:
        print(f"cannot reach serve at {url}: {exc}", file=sys.stderr)
        return 1
    processes = body.get("processes") or []  # dns: {workers: N}: serve first, then each worker
    if body.get("ok"):
        print(f"reloaded by {len(processes)} DNS processes" if len(processes) > 1 else "reloaded")
        return 0
    if processes and (processes[0].get("last_reload") or {}).get("ok"):
        # serve took the new zones: the failure is a worker's.
        print("reloaded by serve, but not by every DNS worker:", file=sys.stderr)
        for entry in processes[1:]:
            print(f"- {_worker_outcome(entry, processes[0].get('generation'))}", file=sys.stderr)
        return 1
    print("reload rejected, the previous zones keep serving:", file=sys.stderr)
    for problem in body.get("problems", []):
        print(f"- {problem}", file=sys.stderr)
    return 1


def _worker_outcome(entry: dict[str, Any], generation: int | None) -> str:
    """One DNS worker's answer to the reload ``generation`` of serve, in a line."""
    name = f"dns worker {entry.get('index')} (pid {entry.get('pid')})"
    last = entry.get("last_reload") or {}
    if not entry.get("alive"):
        return f"{name}: not running"
    if generation is not None and (entry.get("generation") or 0) < generation:
        return f"{name}: no answer yet (still reloading?)"
    if last.get("ok"):
        return f"{name}: reloaded"
    problems = "; ".join(last.get("problems") or []) or "no reason given"
    return f"{name}: rejected the zones, serves the previous ones: {problems}"


def _any_missing(paths: Sequence[Path]) -> bool:
    """Name the paths that do not exist (on stderr); whether there were any."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"no such file or directory: {', '.join(map(str, missing))}", file=sys.stderr)
    return bool(missing)


def cmd_zone_check(args: argparse.Namespace) -> int:
    """Validate zone files; print every problem with file:line; exit 1 if any error."""
    from anycastedge.config.pop import SoaConfig
    from anycastedge.config.source import read_text
    from anycastedge.config.zones import build_zone, load_zones

    paths = [Path(p) for p in args.paths] or [Path("zones")]
    if _any_missing(paths):
        return 1
    if args.as_name is not None and (len(paths) != 1 or paths[0].is_dir()):
        print("--as names one zone file: give exactly one FILE", file=sys.stderr)
        return 2
    try:
        if args.as_name is None:
            zones, warnings = load_zones(paths, SoaConfig())
            count = len(zones)
        else:
            # A copy under another name (Ansible's `validate:` hands over a temporary file):
            # the zone's name and every file:line come from the name it will have.
            _, warnings = build_zone(Path(args.as_name), SoaConfig(), text=read_text(paths[0]))
            count = 1
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stdout)
        errors = sum(1 for p in exc.problems if not p.warning)
        print(f"{errors} error(s), {len(exc.problems) - errors} warning(s)")
        return 1
    _print_problems(warnings, sys.stdout)
    print(f"{count} zone(s) OK, {len(warnings)} warning(s)")
    return 0


def _rrl_summary(rrl: RrlConfig | None) -> str:
    """dns.rrl in one line, for `config check`."""
    if rrl is None:
        return "off"
    rates = ", ".join(
        f"{label} {rate}" for label, rate in zip(CLASS_LABELS, rrl.rates, strict=True)
    )
    mode = ", log only" if rrl.log_only else ""
    return (
        f"{rates} a second per /{rrl.ipv4_prefix} or /{rrl.ipv6_prefix}, window "
        f"{rrl.window} s, slip {rrl.slip}, exempt {' '.join(rrl.exempt) or 'none'}{mode}"
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate pop.yaml and everything serve would load with it: zones, certificates, the
    ExaBGP config; exit 1 with every problem."""
    from anycastedge.bgp.exabgp import render_config
    from anycastedge.config.source import writable_by_others
    from anycastedge.config.zones import load_zones

    config = _pop_config(args)  # a ConfigError is printed by main, with every problem
    zones, warnings = load_zones([config.dns.zones], config.dns.soa)
    assert config.source is not None
    loose = writable_by_others(config.source)
    warnings = [loose, *warnings] if loose is not None else warnings
    _print_problems(warnings, sys.stdout)
    if config.bgp.neighbors:
        render_config(config)
    listen = " ".join(f"{h}:{p}" for h, p in config.dns.listen)
    bgp = config.bgp
    session = (f"AS {bgp.local_as}, {len(bgp.neighbors)} neighbor(s), "
               f"{len(bgp.health.checks)} check(s)" if bgp.neighbors else "none")  # fmt: skip
    print(f"{config.source}: POP {config.pop} OK")
    processes = f", {config.dns.workers} processes" if config.dns.workers > 1 else ""
    print(f"  dns: {listen}{processes}, {len(zones)} zone(s) from {config.dns.zones}, "
          f"{len(warnings)} warning(s)")  # fmt: skip
    print(f"  anycast: {' '.join(config.anycast) or 'none'}; bgp: {session}")
    print(f"  rrl: {_rrl_summary(config.dns.rrl)}")
    forward = config.forward
    engine = forward.engine
    if engine == "haproxy" and (forward.listeners or forward.backends):
        from anycastedge.forward.haproxy_files import check_forward
        from anycastedge.forward.haproxy_render import Runtime

        ok, output = check_forward(forward, Runtime.under(str(config.state_dir)))
        if not ok:
            print(f"{config.source}: haproxy -c refused the rendered forward: section:\n{output}",
                  file=sys.stderr)  # fmt: skip
            return 1
        engine += " (haproxy -c: OK)"
    print(f"  forward: {len(forward.listeners)} listener(s), {len(forward.backends)} backend(s), "
          f"engine {engine}")  # fmt: skip
    return 0


def cmd_forward_check(args: argparse.Namespace) -> int:
    """Validate pop.yaml (its forward: section with the rest); print what it would forward."""
    config = _pop_config(args)  # a ConfigError is printed by main, with every problem
    forward = config.forward
    for lst in forward.listeners:
        if lst.http is None:
            print(f"listener {lst.name}: {lst.bind}/{lst.protocol} -> {lst.backend}")
            continue
        tls = lst.http.tls
        extra = f", TLS {tls.min_version}+, {len(tls.certificates)} certificate(s)" if tls else ""
        print(f"listener {lst.name}: {lst.bind}/{lst.protocol}{extra}, first matching route:")
        for route in lst.http.routes:
            limit = "" if route.max_body is None else f" (max_body {route.max_body})"
            hosts = ", ".join(route.hosts) or "any host"
            print(f"  {hosts} {route.path_prefix} -> {route.backend}{limit}")
    for backend in forward.backends:
        endpoints = ", ".join(f"{e} w{e.weight}" for e in backend.endpoints)
        check = backend.healthcheck
        flags = " critical" if backend.critical else ""
        print(f"backend {backend.name}: {backend.balance}, {check.protocol.lower()} check every "
              f"{check.interval:g}s{flags}: {endpoints}")  # fmt: skip
    if forward.engine == "haproxy":
        print(f"engine: haproxy ({forward.workers} thread(s); `anycastedge forward render` shows "
              "its configuration)")  # fmt: skip
    elif forward.workers > 1:
        print(f"workers: {forward.workers} processes on the tcp, http and https listeners")
    print(f"{len(forward.listeners)} listener(s), {len(forward.backends)} backend(s) OK")
    return 0


def cmd_forward_render(args: argparse.Namespace) -> int:
    """Print (or write) the HAProxy configuration pop.yaml's forward: makes; --check: have
    HAProxy check it, with its certificates, in a temporary directory."""
    from anycastedge.forward.haproxy_files import check_forward
    from anycastedge.forward.haproxy_render import Runtime, render, socket_problem, unsupported

    path = _pop_config_path(args)
    config = load_pop(path)  # a ConfigError is printed by main, with every problem
    forward = config.forward
    runtime = Runtime.under(str(config.state_dir))
    # engine: haproxy had these refused with their lines already; builtin shows what haproxy
    # would run, so says what it could not.
    refused = [] if forward.engine == "haproxy" else unsupported(forward)
    problems = [Problem(f"forward{_key_path(key)}: {message}", Location(str(path)))
                for key, message in refused]  # fmt: skip
    if (sockets := socket_problem(forward, runtime)) is not None:
        problems.append(Problem(f"state_dir: {sockets}", Location(str(path))))
    if problems:
        raise ConfigError(problems)
    rendered = render(forward, runtime)
    if args.check:
        ok, output = check_forward(forward, runtime)
        if not ok:
            print(output, file=sys.stderr)
            return 1
    if args.output:
        Path(args.output).write_text(rendered.config)
        print(f"wrote {args.output}" + (" (haproxy -c: OK)" if args.check else ""))
    else:
        sys.stdout.write(rendered.config)
    return 0


def _key_path(key: tuple[str | int, ...]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in key)


def _listener_fd(text: str) -> tuple[str, int]:
    name, sep, fd = text.rpartition("=")
    if not sep or not name or not fd.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FD")
    return name, int(fd)


def cmd_forward_worker(args: argparse.Namespace) -> int:
    """Run as one of serve's forwarding workers (serve starts them: forward: {workers: N})."""
    import socket

    from twisted.internet import reactor, task

    from anycastedge.app import build_worker

    prefix = f"worker {args.worker} (pid {os.getpid()}): "
    config = _pop_config(args)
    # The descriptors serve passed (pass_fds): listening TCP sockets, family read from them.
    sockets = {name: socket.socket(fileno=fd) for name, fd in args.fd}
    worker = build_worker(config, reactor, sockets)

    def on_hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(worker.reload)  # type: ignore[attr-defined]

    signal.signal(signal.SIGHUP, on_hup)
    parent = os.getppid()

    def orphaned() -> None:
        # serve was killed without stopping its workers: one left would hold the listeners'
        # sockets open, accepting with nobody to supervise it.
        if os.getppid() != parent:
            print(f"{prefix}serve (pid {parent}) is gone: stopping", file=sys.stderr, flush=True)
            reactor.stop()  # type: ignore[attr-defined]

    watch = task.LoopingCall(orphaned)
    watch.start(1.0, now=False)
    return _run_worker(worker.service, prefix)


def cmd_dns_worker(args: argparse.Namespace) -> int:
    """Run as one of serve's DNS workers (serve starts them: dns: {workers: N})."""
    import socket
    import time

    from twisted.internet import reactor

    from anycastedge.app import build_dns_worker
    from anycastedge.dns.service import SHOWN, ReloadResult, shown
    from anycastedge.dns.workers import HELLO_WAIT, Hello, Loaded, receive_blocking, send_blocking

    prefix = f"dns worker {args.worker} (pid {os.getpid()}): "
    link = socket.socket(fileno=args.link)
    # serve's first message, before anything else: the configuration, serials and health.
    try:
        hello = receive_blocking(link, HELLO_WAIT)
    except Exception as exc:  # a closed or silent link, or what does not unpickle
        print(f"{prefix}no word from serve: {exc}", file=sys.stderr)
        return 1
    if not isinstance(hello, Hello):
        print(f"{prefix}serve's first message is not a Hello", file=sys.stderr)
        return 1
    # The descriptors serve passed (pass_fds): UDP and TCP sockets, family and type read from them.
    sockets = {name: socket.socket(fileno=fd) for name, fd in args.fd}

    def gone() -> None:
        reactor.stop()  # type: ignore[attr-defined]

    try:
        worker = build_dns_worker(hello, reactor, sockets, link, gone)
    except ConfigError as exc:
        # Told to serve (its /status says which worker could not start, and why), and logged.
        errors = [p for p in exc.problems if not p.warning]  # serve has shown the warnings
        result = ReloadResult(time.time(), False, "start", shown(errors))
        with contextlib.suppress(OSError):
            send_blocking(link, Loaded(hello.generation, result, {}))
        _print_problems(errors[:SHOWN])
        print(f"{prefix}the zones do not load: exiting", file=sys.stderr)
        return 1

    def on_hup(signum: int, frame: Any) -> None:
        # Reloads come from serve, with its serials; one of our own could serve others.
        print(f"{prefix}SIGHUP ignored: send it to serve (pid {os.getppid()})", file=sys.stderr)

    signal.signal(signal.SIGHUP, on_hup)
    return _run_worker(worker.service, prefix)


def _run_worker(top: Any, prefix: str) -> int:
    """A worker's last steps: start ``top``, log to serve's stderr with ``prefix``, run."""
    from twisted.internet import reactor
    from twisted.logger import FileLogObserver, formatEventAsClassicLogText, globalLogBeginner

    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)  # type: ignore[attr-defined]

    def text(event: dict[str, Any]) -> str | None:
        line = formatEventAsClassicLogText(event)
        return prefix + line if line else None

    globalLogBeginner.beginLoggingTo([FileLogObserver(sys.stderr, text)], redirectStandardIO=False)
    reactor.run()  # type: ignore[attr-defined]
    return 0


def _pop_config_path(args: argparse.Namespace) -> Path:
    path = _config_path(args.config)
    if path is None:
        raise ConfigError([Problem("no pop.yaml: pass -c, or set $ANYCASTEDGE_CONFIG")])
    return path


def _pop_config(args: argparse.Namespace) -> PopConfig:
    return load_pop(_pop_config_path(args))


def cmd_bgp_render(args: argparse.Namespace) -> int:
    """Write the ExaBGP config (and FILE.env) for this POP."""
    from anycastedge.bgp.exabgp import render_config, render_environment

    if args.env:
        sys.stdout.write(render_environment())
        return 0
    config = _pop_config(args)
    # --portable names pop.yaml only in a comment, as typed: never the resolved path.
    portable = _config_path(args.config) if args.portable else None
    text = render_config(config, portable_from=portable)
    if args.output:
        out = Path(args.output)
        out.write_text(text)
        Path(f"{out}.env").write_text(render_environment())
        print(f"wrote {out} and {out}.env", file=sys.stderr)
    else:
        sys.stdout.write("".join(f"# env: {line}\n" for line in render_environment().splitlines()))
        sys.stdout.write(text)
    return 0


def cmd_bgp_hook(args: argparse.Namespace) -> int:
    """Run as ExaBGP's API process."""
    from anycastedge.bgp.hook import ConfigFile
    from anycastedge.bgp.hook import main as hook_main
    from anycastedge.config.bgp import NO_CHECKS

    try:
        config_file = ConfigFile(_pop_config_path(args))
        config = config_file.load()
        if not config.bgp.health.checks:
            # No bgp: section at all (one without checks does not load): nothing to vouch with.
            where = Location(str(config.source)) if config.source else None
            raise ConfigError([Problem(f"bgp.health.checks: {NO_CHECKS}", where)])
    except (ConfigError, OSError) as exc:
        # Exit at once: ExaBGP gives up after five quick deaths and takes the session down.
        _print_problems(exc.problems if isinstance(exc, ConfigError) else [Problem(str(exc))])
        path = _config_path(args.config)
        if path is not None and not path.is_absolute():
            # The usual cause under ExaBGP, which runs its processes from /.
            print(f"(the relative {path} was read from {Path.cwd()})", file=sys.stderr)
        return 2
    return hook_main(config_file, config, sys.stdin, sys.stdout)


def cmd_pop_withdraw(args: argparse.Namespace) -> int:
    """Put the POP into maintenance: drain, then withdraw."""
    import getpass
    import time

    from anycastedge.statedir.maintenance import Maintenance, set_maintenance

    config = _pop_config(args)
    drain = config.bgp.drain_seconds if args.drain is None else args.drain
    who = os.environ.get("SUDO_USER") or getpass.getuser()
    set_maintenance(config.state_dir, Maintenance(time.time(), drain, args.reason or "", who))
    print(f"{config.pop}: maintenance set by {who}; draining {drain:g}s, then withdrawing")
    return 0


def cmd_pop_announce(args: argparse.Namespace) -> int:
    """Take the POP out of maintenance; the hook announces again while healthy."""
    from anycastedge.statedir.maintenance import clear_maintenance

    config = _pop_config(args)
    was = clear_maintenance(config.state_dir)
    print(f"{config.pop}: " + ("maintenance cleared" if was else "was not in maintenance"))
    return 0


def cmd_pop_status(args: argparse.Namespace) -> int:
    """Show maintenance, what the hook told ExaBGP, and the checks. Exit codes in docs/bgp.md."""
    import json

    from anycastedge.control.status import pop_status, render_pop_status, status_json

    status = pop_status(_pop_config(args))
    if args.json:
        print(json.dumps(status_json(status), indent=2, sort_keys=True))
    else:
        print(render_pop_status(status))
    return status.exit_code


def _pop_address(text: str) -> Any:
    from anycastedge.control.verify import parse_pop

    try:
        return parse_pop(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dns_address(text: str) -> tuple[str, int]:
    from anycastedge.control.verify import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value

    return convert


def cmd_pop_verify(args: argparse.Namespace) -> int:
    """Ask every POP the same questions, compare the answers; exit 1 on any difference."""
    import json
    from functools import partial

    import dns.exception

    from anycastedge.config.pop import SoaConfig
    from anycastedge.config.zones import load_zones
    from anycastedge.control.probe_pops import ask, ask_all, ask_anycast
    from anycastedge.control.verify import (
        Report,
        compare,
        plan_named_zone,
        plan_zone,
        render_text,
        report_json,
    )

    names = [pop.name for pop in args.pop]
    if len(set(names)) != len(names):
        print(f"--pop names must differ: {', '.join(names)}", file=sys.stderr)
        return 2
    paths = [Path(p) for p in args.zones or []]
    if args.zones is None and Path("zones").exists():
        paths = [Path("zones")]
    if _any_missing(paths):
        return 1
    try:
        zones, _warnings = load_zones(paths, SoaConfig()) if paths else ([], [])
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stdout)
        errors = sum(1 for p in exc.problems if not p.warning)
        print(f"{errors} error(s) in the zone files: nothing was asked")
        return 1
    plans = [plan_zone(zone, args.sample) for zone in zones]
    known = {plan.zone for plan in plans}
    for name in args.zone or []:
        try:
            plan = plan_named_zone(name)
        except dns.exception.DNSException as exc:
            print(f"--zone {name!r}: {exc}", file=sys.stderr)
            return 2
        if plan.zone not in known:
            known.add(plan.zone)
            plans.append(plan)
    if not plans:
        print("nothing to verify: no zone files (--zones, default zones/) and no --zone",
              file=sys.stderr)  # fmt: skip
        return 2
    answers = ask_all(args.pop, plans, partial(ask, timeout=args.timeout))
    zone_results, differences = compare(plans, answers)
    first = plans[0].zone
    anycast = tuple(ask_anycast(h, p, first, args.timeout) for h, p in args.anycast or [])
    report = Report(tuple(args.pop), zone_results, differences, anycast)
    if args.json:
        print(json.dumps(report_json(report), indent=2, sort_keys=True))
    else:
        print(render_text(report))
    return report.exit_code


def cmd_lab(args: argparse.Namespace) -> int:
    """The network-namespace lab: up, down, status, test (root). docs/lab.md."""
    import json

    from anycastedge.lab.report import as_json, status_text, table
    from anycastedge.lab.runner import Lab, LabError
    from anycastedge.lab.scenarios import run_all

    lab = Lab()
    try:
        if args.lab_cmd == "up":
            lab.up()
            print(status_text(lab.status()))
            print("try: ip netns exec ae-client1 dig +nsid @203.0.113.53 example.com SOA\n"
                  f"     birdc -s {lab.bird_socket} show route all\n"
                  "     anycastedge lab test; anycastedge lab down")  # fmt: skip
            return 0
        if args.lab_cmd == "down":
            removed = lab.down()
            print(f"removed {' '.join(removed)}" if removed else "nothing to remove")
            return 0
        if args.lab_cmd == "status":
            status = lab.status()
            print(json.dumps(status, indent=2) if args.json else status_text(status))
            return 0
        if not lab.status()["namespaces"]:
            print("the lab is down: run `anycastedge lab up` first", file=sys.stderr)
            return 1
        results = run_all(lab.load())
        print(json.dumps(as_json(results), indent=2) if args.json else table(results))
        return 0 if all(r.ok for r in results) else 1
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="anycastedge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the authoritative DNS server")
    serve.add_argument("-c", "--config", help="pop.yaml (default $ANYCASTEDGE_CONFIG, "
                       "then /etc/anycastedge/pop.yaml, else the embedded default)")  # fmt: skip
    serve.add_argument("--zones", help="directory of <zone>.yaml files")
    serve.add_argument("--listen", action="append", type=_hostport, metavar="HOST:PORT",
                       help="DNS address (UDP and TCP); repeatable")  # fmt: skip
    serve.add_argument("--control", type=_loopback_hostport, metavar="HOST:PORT",
                       help="control endpoint (/metrics, /status, /healthz)")  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    reload = sub.add_parser("reload", help="reload a running serve's zones, print the outcome")
    reload.add_argument("-c", "--config", help="the pop.yaml serve runs with (its control.listen)")
    reload.add_argument("--control", type=_loopback_hostport, metavar="HOST:PORT",
                        help="serve's control endpoint, if not the config's")  # fmt: skip
    reload.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    reload.set_defaults(func=cmd_reload, zones=None, listen=None)

    zone = sub.add_parser("zone", help="zone file tools").add_subparsers(
        dest="zone_cmd", required=True
    )
    check = zone.add_parser("check", help="validate zone files, every problem with file:line")
    check.add_argument("paths", nargs="*", help="zone files or directories (default: zones/)")
    check.add_argument("--as", dest="as_name", metavar="NAME",
                       help="check one FILE as if it were named NAME (e.g. example.com.yaml): "
                       "for a temporary copy, as Ansible's validate: hands over")  # fmt: skip
    check.set_defaults(func=cmd_zone_check)

    config = sub.add_parser("config", help="pop.yaml tools").add_subparsers(
        dest="config_cmd", required=True
    )
    ccheck = config.add_parser(
        "check", help="validate pop.yaml and what serve would load with it, without starting"
    )
    ccheck.add_argument("-c", "--config")
    ccheck.set_defaults(func=cmd_config_check)

    bgp = sub.add_parser("bgp", help="BGP: ExaBGP config and hook").add_subparsers(
        dest="bgp_cmd", required=True
    )
    render = bgp.add_parser("render", help="write the ExaBGP config for this POP")
    render.add_argument("-c", "--config")
    where = render.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="config file (its environment goes to FILE.env)")
    where.add_argument(
        "--env", action="store_true", help="print only ExaBGP's environment (KEY=VALUE lines)"
    )
    render.add_argument(
        "--portable",
        action="store_true",
        help="name no path of this machine: the hook runs as `anycastedge` from ExaBGP's PATH "
        "and reads $ANYCASTEDGE_CONFIG (default: this Python, -c with the absolute pop.yaml)",
    )
    render.set_defaults(func=cmd_bgp_render)
    hook = bgp.add_parser("hook", help="run as ExaBGP's API process")
    hook.add_argument("-c", "--config")
    hook.set_defaults(func=cmd_bgp_hook)

    fwd = sub.add_parser("forward", help="the forwarding tier").add_subparsers(
        dest="forward_cmd", required=True
    )
    fcheck = fwd.add_parser("check", help="validate pop.yaml's forward: without starting anything")
    fcheck.add_argument("-c", "--config")
    fcheck.set_defaults(func=cmd_forward_check)
    frender = fwd.add_parser(
        "render", help="the HAProxy configuration forward: makes (what engine: haproxy runs)"
    )
    frender.add_argument("-c", "--config")
    frender.add_argument("-o", "--output", metavar="FILE", help="write it there, not to stdout")
    frender.add_argument("--check", action="store_true",
                         help="have haproxy -c check it, with its certificates")  # fmt: skip
    frender.set_defaults(func=cmd_forward_render)
    fworker = fwd.add_parser(
        "worker", help="one more forwarding process on serve's sockets (started by serve)"
    )
    fworker.add_argument("-c", "--config", help="serve's pop.yaml")
    fworker.add_argument("--worker", type=int, required=True, help="its index, 1..N-1")
    fworker.add_argument("--fd", action="append", type=_listener_fd, default=[], metavar="NAME=FD",
                         help="listener NAME's inherited socket; repeatable")  # fmt: skip
    fworker.set_defaults(func=cmd_forward_worker)

    dns_cmd = sub.add_parser("dns", help="the DNS server").add_subparsers(
        dest="dns_cmd", required=True
    )
    dworker = dns_cmd.add_parser(
        "worker", help="one more DNS process on serve's sockets (started by serve)"
    )
    dworker.add_argument("--worker", type=int, required=True, help="its index, 1..N-1")
    dworker.add_argument("--link", type=int, required=True, metavar="FD",
                         help="its inherited end of the link to serve")  # fmt: skip
    dworker.add_argument("--fd", action="append", type=_listener_fd, default=[], metavar="NAME=FD",
                         help="an inherited DNS socket (udpN, tcpN); repeatable")  # fmt: skip
    dworker.set_defaults(func=cmd_dns_worker)

    pop = sub.add_parser("pop", help="maintenance of this POP; verify the fleet").add_subparsers(
        dest="pop_cmd", required=True
    )
    withdraw = pop.add_parser("withdraw", help="drain, then withdraw the anycast prefixes")
    withdraw.add_argument("-c", "--config")
    withdraw.add_argument("--reason", help="recorded with the maintenance state")
    withdraw.add_argument(
        "--drain", type=float, help="seconds to drain (default bgp.drain.seconds)"
    )
    withdraw.set_defaults(func=cmd_pop_withdraw)
    announce = pop.add_parser("announce", help="end maintenance; announce while healthy")
    announce.add_argument("-c", "--config")
    announce.set_defaults(func=cmd_pop_announce)
    status = pop.add_parser("status", help="maintenance, announcements, checks")
    status.add_argument("-c", "--config")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_pop_status)
    verify = pop.add_parser(
        "verify",
        help="ask every POP the same questions (SOA, sampled names), report where they differ",
        description="Ask every POP's unicast address the zones' SOA and a sample of static names "
        "(GSLB records are not compared); report where the POPs differ, with the dig commands "
        "that show it. Exit 0: all agree; 1: a difference, an --anycast address without answer, "
        "or zone files that do not load; 2: usage. docs/operations.md, 'Verify the fleet'.",
    )
    verify.add_argument(
        "--pop",
        action="append",
        required=True,
        type=_pop_address,
        metavar="NAME=HOST[:PORT]",
        help="a POP's unicast DNS address (port 53; IPv6 as [V6]:PORT); repeatable",
    )
    verify.add_argument(
        "--zones",
        action="extend",
        nargs="+",
        metavar="PATH",
        help="zone files or directories (default: zones/ if it exists)",
    )
    verify.add_argument(
        "--zone",
        action="append",
        metavar="ZONE",
        help="a zone known only by name: only its SOA is compared; repeatable",
    )
    verify.add_argument(
        "--sample",
        type=_positive(int),
        default=20,
        metavar="N",
        help="static names asked per zone, the apex included (default 20)",
    )
    verify.add_argument(
        "--anycast",
        action="append",
        type=_dns_address,
        metavar="HOST[:PORT]",
        help="show which POP (by NSID) answers this address; repeatable",
    )
    verify.add_argument(
        "--timeout",
        type=_positive(float),
        default=2.0,
        metavar="S",
        help="seconds per query attempt (default 2)",
    )
    verify.add_argument("--json", action="store_true", help="the report as one JSON document")
    verify.set_defaults(func=cmd_pop_verify)
    lab = sub.add_parser("lab", help="the network-namespace lab (root): docs/lab.md")
    lab_sub = lab.add_subparsers(dest="lab_cmd", required=True)
    lab_sub.add_parser("up", help="build the namespaces, start BIRD, the POPs, the backends")
    lab_sub.add_parser("down", help="remove every namespace, process and file of the lab")
    lab_status = lab_sub.add_parser("status", help="which POP the router prefers, each hook")
    lab_status.add_argument("--json", action="store_true")
    lab_test = lab_sub.add_parser("test", help="run the scenarios, print one table")
    lab_test.add_argument("--json", action="store_true")
    lab.set_defaults(func=cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _print_problems(exc.problems)
        return 1
