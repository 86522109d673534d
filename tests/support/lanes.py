"""The fast lane and the full suite: how many examples a property test tries in each.

The full suite (`pytest`, `scripts/test.sh`) runs every property test with the count written in
the test. The fast lane (`pytest -m "not integration and not slow"`) runs the same tests with a
tenth of it (at least 10): the same properties, checked on fewer random cases, so that the lane
stays under a minute. `POC_TEST_PROFILE=fast|full` chooses explicitly; without it, a run whose
`-m` expression leaves slow tests out is the fast lane. tests/conftest.py decides, once, before
any test module is imported.
"""

from __future__ import annotations

import os

from hypothesis import settings

PROFILES = ("full", "fast")
_profile = "full"

# For property tests that state no count of their own.
settings.register_profile("full", deadline=None)
settings.register_profile("fast", max_examples=10, deadline=None)


def choose(markexpr: str) -> str:
    """The profile for a run: POC_TEST_PROFILE if set, else 'fast' when `markexpr` (pytest's -m)
    leaves slow tests out. Raises ValueError for an unknown profile name."""
    chosen = os.environ.get("POC_TEST_PROFILE", "").strip()
    if not chosen:
        chosen = "fast" if "not slow" in " ".join(markexpr.split()) else "full"
    if chosen not in PROFILES:
        raise ValueError(f"POC_TEST_PROFILE must be one of {', '.join(PROFILES)}, not {chosen!r}")
    return chosen


def use(profile: str) -> None:
    """Make `profile` the one examples() and Hypothesis follow for the rest of the run."""
    global _profile
    _profile = profile
    settings.load_profile(profile)


def current() -> str:
    return _profile


def examples(full: int) -> int:
    """`full` in the full suite; a tenth of it, at least 10 (never more than `full`), in the fast lane."""
    if _profile == "fast":
        return min(full, max(10, full // 10))
    return full
