"""What the probes' samples say: losses, the POP before and after, the time to move."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from anycastedge.lab.measure import Result, Sample, outcome, samples_from
from anycastedge.lab.report import as_json, table


def _stream(*pops: str | None, start: float = 100.0, step: float = 0.1) -> list[Sample]:
    return [Sample(start + i * step, pop) for i, pop in enumerate(pops)]


def test_a_clean_move_has_no_losses_and_the_time_from_the_event() -> None:
    """pop1 three times, then pop2: moved 0.2 s after an event at 100.1."""
    o = outcome(_stream("pop1", "pop1", "pop1", "pop2", "pop2"), event_at=100.1)
    assert (o.total, o.failed, o.before, o.after) == (5, 0, "pop1", "pop2")
    assert o.moved and abs(o.moved_after - 0.2) < 1e-9  # type: ignore[operator]


def test_losses_are_counted_and_the_move_counts_from_the_old_pops_last_answer() -> None:
    """A flap back to pop1 after a pop2 answer: the move is the first pop2 after pop1's last."""
    o = outcome(_stream("pop1", None, "pop2", "pop1", None, "pop2", "pop2"), event_at=100.0)
    assert o.failed == 2 and o.failed_after_event == 2
    assert abs(o.moved_after - 0.5) < 1e-9  # type: ignore[operator]


def test_no_move_and_nothing_answered() -> None:
    """Same POP throughout: not moved; nothing answered: no POPs at all."""
    same = outcome(_stream("pop1", "pop1"), event_at=100.0)
    assert not same.moved and same.moved_after is None
    silent = outcome(_stream(None, None), event_at=100.0)
    assert (silent.failed, silent.before, silent.after) == (2, None, None)


@given(st.lists(st.sampled_from(["pop1", "pop2", None]), max_size=60), st.floats(99, 110))
def test_counts_always_add_up(pops: list[str | None], event_at: float) -> None:
    """failed + answered = total; failures after the event never exceed failures; a move is
    never reported before the event."""
    o = outcome(_stream(*pops), event_at)
    assert o.failed == pops.count(None) and o.total == len(pops)
    assert 0 <= o.failed_after_event <= o.failed
    assert o.moved_after is None or o.moved_after >= 0
    assert o.moved == (o.moved_after is not None)


def test_probe_json_maps_endpoint_labels_to_pops() -> None:
    """An HTTP probe's endpoint names become POPs; null stays a failure."""
    samples = samples_from([[1.0, "pop1-a"], [2.0, None]], lambda name: name.split("-")[0])
    assert samples == [Sample(1.0, "pop1"), Sample(2.0, None)]


def test_report_table_and_json() -> None:
    """The table has a row per scenario with lost/total and the move; failures are listed."""
    o = outcome(_stream("pop1", None, "pop2"), event_at=100.05)
    results = [Result("maintenance", o, o, ("no loss",), ("no loss",), {"client1": "NSID pop1"})]
    text = table(results)
    assert "maintenance" in text and "1/3" in text and "DNS 150 ms" in text
    assert "FAILED maintenance: no loss" in text and "0 of 1 scenarios as expected" in text
    document = as_json(results)
    assert document["ok"] is False and document["scenarios"][0]["dns"]["failed"] == 1
