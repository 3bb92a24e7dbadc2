"""What the zone service keeps and logs of a load's problems."""

from __future__ import annotations

from anycastedge.dns.service import SHOWN, shown
from anycastedge.errors import Location, Problem


def test_problems_shown_are_bounded() -> None:
    """A zone with 100k warnings must not log 100k lines from the reactor (it stalled queries
    for seconds): the first SHOWN are kept, then how many more and where to see them all."""
    problems = [
        Problem(f"warning {i}", Location("z.yaml", i + 1, 1), warning=True) for i in range(250)
    ]
    out = shown(problems)
    assert len(out) == SHOWN + 1
    assert out[0] == str(problems[0]) and out[SHOWN - 1] == str(problems[SHOWN - 1])
    assert out[-1] == f"... and {250 - SHOWN} more (`anycastedge zone check` lists them all)"
    assert shown(problems[:3]) == tuple(str(p) for p in problems[:3])
