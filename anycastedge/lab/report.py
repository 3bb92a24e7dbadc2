"""The lab's results as one table, or as JSON (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anycastedge.lab.measure import Outcome, Result

HEADER = ("scenario", "lost queries", "failed requests", "time to move", "answered before -> after")


def _count(o: Outcome | None) -> str:
    return "-" if o is None else f"{o.failed}/{o.total}"


def _move(dns: Outcome | None, http: Outcome | None) -> str:
    parts = []
    for label, o in (("DNS", dns), ("HTTP", http)):
        if o is not None and o.moved_after is not None:
            parts.append(f"{label} {o.moved_after * 1000:.0f} ms")
    return ", ".join(parts) or "-"


def _pops(dns: Outcome | None, http: Outcome | None) -> str:
    parts = [
        f"{label} {o.before} -> {o.after}"
        for label, o in (("DNS", dns), ("HTTP", http))
        if o is not None
    ]
    return ", ".join(parts) or "-"


def table(results: Sequence[Result]) -> str:
    """One row per scenario, then what each expected that did not hold, and the notes."""
    rows = [HEADER] + [
        (r.name, _count(r.dns), _count(r.http), _move(r.dns, r.http), _pops(r.dns, r.http))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    for r in results:
        for key, note in r.notes.items():
            lines.append(f"  {r.name}: {key}: {note}")
        for failure in r.failures:
            lines.append(f"  FAILED {r.name}: {failure}")
    ok = sum(r.ok for r in results)
    lines.append(f"{ok} of {len(results)} scenarios as expected")
    return "\n".join(lines)


def _outcome(o: Outcome | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {
        "total": o.total,
        "failed": o.failed,
        "failed_after_event": o.failed_after_event,
        "before": o.before,
        "after": o.after,
        "moved_after_ms": None if o.moved_after is None else round(o.moved_after * 1000, 1),
    }


def as_json(results: Sequence[Result]) -> dict[str, Any]:
    """The same for machines."""
    return {
        "ok": all(r.ok for r in results),
        "scenarios": [
            {
                "name": r.name,
                "dns": _outcome(r.dns),
                "http": _outcome(r.http),
                "expected": list(r.expected),
                "failures": list(r.failures),
                "notes": r.notes,
            }
            for r in results
        ],
    }


def status_text(status: dict[str, Any]) -> str:
    """`lab status` for people: the router's choice, then each POP's processes and hook."""
    if not status["namespaces"]:
        return "the lab is down (anycastedge lab up builds it)"
    routes = ", ".join(status["routes"]) or "none"
    lines = [
        f"namespaces: {' '.join(status['namespaces'])}",
        f"router: prefers {status['preferred'] or 'nothing'} (routes to the anycast address "
        f"from: {routes})",
    ]
    for name, pop in status["pops"].items():
        running = [p for p in ("serve", "exabgp") if pop[p]]
        prefixes = ", ".join(f"{p} {s}" for p, s in pop["prefixes"].items()) or "nothing told"
        lines.append(
            f"{name}: running {' '.join(running) or 'nothing'}; hook {pop['hook'] or 'no status'}"
            f"{', in maintenance' if pop['maintenance'] else ''}; {prefixes}"
        )
    return "\n".join(lines)
