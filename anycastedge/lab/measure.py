"""What a probe's samples say about a scenario (pure): how many were lost, which POP answered
before and after, and how long after the event traffic moved."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """One query or request: when it was sent and which POP answered it (None: lost, failed)."""

    sent: float
    pop: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A probe's stream through one scenario."""

    total: int
    failed: int
    before: str | None  # the POP that answered the first answered sample
    after: str | None  # ... and the last
    moved_after: float | None  # seconds from the event until the new POP answered for good
    failed_after_event: int  # failures among samples sent at or after the event

    @property
    def moved(self) -> bool:
        """Whether traffic ended on another POP than it started on."""
        return self.before is not None and self.after is not None and self.before != self.after


def samples_from(
    raw: Iterable[Sequence[object]], pop_of: Callable[[str], str | None] = lambda label: label
) -> list[Sample]:
    """Samples from a probe's JSON ``[[sent_at, label_or_null], ...]``; ``pop_of`` maps a
    label (an HTTP endpoint's name) to its POP."""
    return [
        Sample(float(sent), None if label is None else pop_of(str(label)))  # type: ignore[arg-type]
        for sent, label in raw
    ]


def outcome(samples: Sequence[Sample], event_at: float) -> Outcome:
    """Summarise ``samples`` (in the order sent) around an event at ``event_at``."""
    answered = [s for s in samples if s.pop is not None]
    before = answered[0].pop if answered else None
    after = answered[-1].pop if answered else None
    moved_after = None
    if before is not None and after is not None and after != before:
        # Settled: the first answer from the new POP after the old one's last.
        last_old = max(i for i, s in enumerate(answered) if s.pop == before)
        first_new = next(s for s in answered[last_old:] if s.pop == after)
        moved_after = max(0.0, first_new.sent - event_at)
    return Outcome(
        total=len(samples),
        failed=len(samples) - len(answered),
        before=before,
        after=after,
        moved_after=moved_after,
        failed_after_event=sum(1 for s in samples if s.pop is None and s.sent >= event_at),
    )


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario: what the DNS and HTTP streams saw, and what it expects of them."""

    name: str
    dns: Outcome | None
    http: Outcome | None
    expected: tuple[str, ...] = ()  # what should hold, in words
    failures: tuple[str, ...] = ()  # what did not
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every expectation held."""
        return not self.failures
