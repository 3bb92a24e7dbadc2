"""The lab's scenarios, measured from the clients: a steady DNS stream (client1, UDP, NSID) and a
steady HTTP stream (client2, a new connection per request) run through each event.

Each scenario starts and ends with the lab as ``up`` left it: every POP announced, the first one
preferred. Probes are bounded in count and time (rate x duration) and run inside the client
namespaces; events run inside the POP's namespace or signal a process the lab started.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import time
from collections.abc import Callable

from anycastedge.lab.measure import Outcome, Result, outcome, samples_from
from anycastedge.lab.runner import Lab, LabError
from anycastedge.lab.topology import ANYCAST, DNS_PORT, HTTP_PORT, Pop

DNS_RATE, HTTP_RATE = 200.0, 20.0  # per second
LEAD = 1.5  # seconds of steady traffic before the event
DRAIN = 2.0  # seconds of drain for the planned withdrawal


def _probe(lab: Lab, client: str, kind: str, rate: float, duration: float) -> subprocess.Popen[str]:
    target = f"{ANYCAST}:{DNS_PORT if kind == 'dns' else HTTP_PORT}"
    args = [kind, target, *(["example.com."] if kind == "dns" else [])]
    argv = lab.python("anycastedge.lab.probe", *args, "--rate", str(rate),
                      "--duration", str(duration))  # fmt: skip
    return subprocess.Popen(["ip", "netns", "exec", client, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _started(process: subprocess.Popen[str], timeout: float = 10.0) -> float:
    """The probe's ``started T`` line (bounded wait)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("started "):
        process.kill()
        raise LabError(f"probe did not start: {line!r} {process.communicate()[1][-500:]}")
    return float(line.split()[1])


def _samples(process: subprocess.Popen[str], timeout: float) -> list[list[object]]:
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise LabError(f"probe failed ({process.returncode}): {err[-500:]}")
    return json.loads(out.strip().splitlines()[-1])["samples"]


def through(lab: Lab, event: Callable[[], None], after_event: float) -> tuple[Outcome, Outcome]:
    """Run both streams for LEAD + ``after_event`` seconds with ``event`` at LEAD."""
    duration = LEAD + after_event
    dns = _probe(lab, lab.topology.clients[0].ns, "dns", DNS_RATE, duration)
    http = _probe(lab, lab.topology.clients[1].ns, "http", HTTP_RATE, duration)
    try:
        start = max(_started(dns), _started(http))
        time.sleep(max(0.0, start + LEAD - time.time()))  # steady traffic first: the baseline
        event_at = time.time()
        event()
        bound = duration + 15.0
        dns_samples, http_samples = _samples(dns, bound), _samples(http, bound)
    finally:
        for process in (dns, http):
            if process.poll() is None:
                process.kill()
                process.wait()

    def pop_of(endpoint: str) -> str | None:
        pop = lab.topology.pop_of_endpoint(endpoint)
        return pop.name if pop else None

    return (
        outcome(samples_from(dns_samples), event_at),
        outcome(samples_from(http_samples, pop_of), event_at),
    )


def _pop_cli(lab: Lab, pop: Pop, *args: str) -> None:
    result = lab.netns(pop.ns, *lab.python("anycastedge", "pop", *args, "-c",
                                           str(pop.config(lab.repo))))  # fmt: skip
    if result.returncode != 0:
        raise LabError(f"pop {' '.join(args)} on {pop.name}: {result.stderr.strip()}")


def _check(checks: list[tuple[str, bool]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(c for c, _ in checks), tuple(c for c, ok in checks if not ok)


def _moved(what: str, o: Outcome, old: str, new: str) -> tuple[str, bool]:
    return f"{what} moves {old} -> {new}", (o.before, o.after) == (old, new)


def _lossless(dns: Outcome, http: Outcome, old: str, new: str) -> list[tuple[str, bool]]:
    """Both streams moved from ``old`` to ``new`` and lost nothing on the way."""
    return [
        _moved("DNS", dns, old, new),
        ("no DNS query lost", dns.failed == 0),
        _moved("HTTP", http, old, new),
        ("no HTTP request failed", http.failed == 0),
    ]


def first_answers(lab: Lab) -> Result:
    """Which POP answers the anycast address from each client (NSID), and GSLB by network."""
    preferred = lab.topology.pops[0].name
    notes, checks = {}, []
    for client in lab.topology.clients:
        out = lab.netns(client.ns, "dig", f"@{ANYCAST}", "example.com", "SOA", "+nsid", "+norec",
                        "+time=2", "+tries=1").stdout  # fmt: skip
        nsid = out.split('("', 1)[1].split('")', 1)[0] if '("' in out else None
        cdn = lab.netns(client.ns, "dig", "+short", f"@{ANYCAST}", "cdn.example.com", "A",
                        "+time=2", "+tries=1").stdout.split()  # fmt: skip
        notes[client.name] = f"NSID {nsid}, cdn.example.com {' '.join(cdn) or 'no answer'}"
        checks.append((f"{client.name} reaches {preferred}", nsid == preferred))
    eu, na = (notes[c.name] for c in lab.topology.clients)
    checks.append(("client1 (EU) gets the eu pool", "127.0.0.11" in eu))
    na_pool = {"127.0.0.21", "127.0.0.22"}
    checks.append(("client2 (NA-US) gets the na pool", bool(na_pool & set(na.split()))))
    ecs = lab.netns(lab.topology.clients[1].ns, "dig", "+short", f"@{ANYCAST}", "cdn.example.com",
                    "A", "+subnet=192.0.2.0/24", "+time=2", "+tries=1").stdout.split()  # fmt: skip
    notes["client2 with ECS 192.0.2.0/24"] = f"cdn.example.com {' '.join(ecs) or 'no answer'}"
    checks.append(("client2 with ECS in EU gets the eu pool", "127.0.0.11" in ecs))
    expected, failures = _check(checks)
    return Result("anycast and GSLB", None, None, expected, failures, notes)


def maintenance(lab: Lab) -> Result:
    """`pop withdraw` on the preferred POP: drain, then withdraw; nothing lost."""
    first, second = lab.topology.pops[0], lab.topology.pops[1]
    dns, http = through(
        lab, lambda: _pop_cli(lab, first, "withdraw", "--drain", str(DRAIN), "--reason", "lab"),
        DRAIN + 3.0,
    )  # fmt: skip
    expected, failures = _check(_lossless(dns, http, first.name, second.name))
    return Result("planned maintenance (pop withdraw)", dns, http, expected, failures)


def announce(lab: Lab) -> Result:
    """`pop announce` on the POP that ``maintenance`` left withdrawn: traffic comes back,
    nothing lost."""
    first, second = lab.topology.pops[0], lab.topology.pops[1]
    dns, http = through(lab, lambda: _pop_cli(lab, first, "announce"), 3.5)
    lab.wait_steady()
    expected, failures = _check(_lossless(dns, http, second.name, first.name))
    return Result("pop announce", dns, http, expected, failures)


def crash(lab: Lab) -> Result:
    """serve killed (SIGKILL) on the preferred POP: the hook withdraws, the other POP answers."""
    first, second = lab.topology.pops[0], lab.topology.pops[1]
    dns, http = through(lab, lambda: lab.stop(f"{first.name}-serve", sig=signal.SIGKILL), 3.5)
    withdrawn = lab.hook_status(first).withdrawn
    lab.start_serve(first)
    lab.wait_steady()
    expected, failures = _check([
        _moved("DNS", dns, first.name, second.name),
        _moved("HTTP", http, first.name, second.name),
        (f"{first.name}'s hook withdrew", withdrawn),
    ])  # fmt: skip
    return Result(f"crash (serve killed on {first.name})", dns, http, expected, failures)


def backends_down(lab: Lab) -> Result:
    """Every endpoint of the preferred POP stopped: its critical backend is down, the hook
    withdraws, HTTP goes on through the other POP; DNS loses nothing."""
    first, second = lab.topology.pops[0], lab.topology.pops[1]
    dns, http = through(lab, lambda: lab.stop_backends(first), 4.0)
    withdrawn = lab.hook_status(first).withdrawn
    lab.start_backends(first)
    lab.wait_steady()
    expected, failures = _check([
        (f"{first.name}'s hook withdrew", withdrawn),
        _moved("HTTP", http, first.name, second.name),
        (f"DNS moves to {second.name}", dns.after == second.name),
        ("no DNS query lost", dns.failed == 0),
    ])  # fmt: skip
    return Result(f"{first.name}'s backends down", dns, http, expected, failures)


# Each group starts from the lab as `up` left it and leaves it so; announce needs the state
# maintenance leaves behind.
SCENARIOS: tuple[tuple[Callable[[Lab], Result], ...], ...] = (
    (first_answers,),
    (maintenance, announce),
    (crash,),
    (backends_down,),
)


def run_all(lab: Lab) -> list[Result]:
    """Every scenario in order."""
    results = []
    for group in SCENARIOS:
        lab.wait_steady()
        results += [scenario(lab) for scenario in group]
    return results
