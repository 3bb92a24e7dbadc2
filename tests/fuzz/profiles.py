"""The settings every fuzz target runs under: a small derandomized smoke by default (what
`make test` runs), or a long campaign with ``HYPOTHESIS_PROFILE=fuzz`` (docs/fuzzing.md).

The targets take their settings from here explicitly rather than from the profile loaded for the
whole session (tests/conftest.py), so choosing a campaign changes nothing for the other tests.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
EXAMPLES_VARIABLE = "FUZZ_EXAMPLES"  # a campaign's examples per target (bench/fuzz.py sets it)
SMOKE = "fuzz-smoke"
CAMPAIGN = "fuzz"
CAMPAIGN_EXAMPLES = 20_000

# Inputs are large and some examples slow (a zone build, a TCP stream): no health check may
# fail a run for that, and no example has a deadline (timings belong in bench/).
_QUIET = list(HealthCheck)

# No example database in either: the tree stays clean, and a campaign's failure is reported
# with the seed and the blob that reproduce it (print_blob).
settings.register_profile(
    SMOKE, database=None, deadline=None, derandomize=True, suppress_health_check=_QUIET,
    print_blob=True,
)  # fmt: skip
settings.register_profile(
    CAMPAIGN, database=None, deadline=None, derandomize=False, suppress_health_check=_QUIET,
    print_blob=True, max_examples=CAMPAIGN_EXAMPLES,
)  # fmt: skip


def campaign() -> bool:
    """Whether this run is a long campaign rather than the smoke of `make test`."""
    return os.environ.get(PROFILE_VARIABLE) == CAMPAIGN


def fuzz_settings(smoke_examples: int) -> settings:
    """The settings of one target: ``smoke_examples`` derandomized examples in `make test`; in
    a campaign, random ones, as many as FUZZ_EXAMPLES says (default CAMPAIGN_EXAMPLES)."""
    if campaign():
        examples = int(os.environ.get(EXAMPLES_VARIABLE, CAMPAIGN_EXAMPLES))
        return settings(settings.get_profile(CAMPAIGN), max_examples=examples)
    return settings(settings.get_profile(SMOKE), max_examples=smoke_examples)
