"""Specs and policies: validation and the backoff schedule."""

from __future__ import annotations

import random

import pytest

from agentd.supervisor import ChildSpec, RestartPolicy, backoff_delay
from agentd.supervisor._intensity import RestartIntensity


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(backoff_initial_s=0.2, backoff_max_s=3.0, jitter=0)
    delays = [backoff_delay(policy, n) for n in range(1, 8)]
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
    assert backoff_delay(policy, 10_000) == 3.0  # no overflow however long the loop


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RestartPolicy(backoff_initial_s=1.0, backoff_max_s=1.0, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 3, rng) for _ in range(500)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert max(delays) - min(delays) > 0.3  # it really spreads


def test_intensity_counts_restarts_within_the_window() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=10, backoff_initial_s=1, jitter=0)
    intensity = RestartIntensity(policy, random.Random())
    assert intensity.next_delay(now=0, ran_s=0.1) == 1
    assert intensity.next_delay(now=1, ran_s=0.1) == 2
    assert intensity.next_delay(now=2, ran_s=0.1) is None  # a third restart within 10 s
    # Later the first restart has left the window; a short run keeps the streak going.
    assert intensity.next_delay(now=10.5, ran_s=0.1) == 4
    assert intensity.recent == 2
    # A run as long as the window ends the streak: the backoff starts over.
    assert intensity.next_delay(now=30, ran_s=10) == 1


def test_spec_defaults_match_the_contract() -> None:
    spec = ChildSpec(name="w", argv=["python", "-m", "agentd.worker"])
    assert spec.argv == ("python", "-m", "agentd.worker")
    assert spec.restart == RestartPolicy()
    assert (spec.restart.max_restarts, spec.restart.window_s) == (5, 60.0)
    assert (spec.stop_grace_s, spec.ready_timeout_s, spec.liveness_failures) == (10.0, 30.0, 3)


def test_argv_is_copied() -> None:
    argv = ["sleep", "1"]
    spec = ChildSpec(name="s", argv=argv)
    argv.append("2")
    assert spec.argv == ("sleep", "1")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"argv": []}, "argv must name a program"),
        ({"stop_grace_s": -1}, "stop_grace_s must be >= 0"),
        ({"liveness_interval_s": 0}, "liveness_interval_s must be > 0"),
        ({"liveness_failures": 0}, "liveness_failures must be >= 1"),
        ({"log_max_bytes": 0}, "log_max_bytes must be >= 1"),
    ],
)
def test_invalid_spec_says_what_is_wrong(kwargs: dict[str, object], problem: str) -> None:
    fields: dict[str, object] = {"name": "w", "argv": ["true"], **kwargs}
    with pytest.raises(ValueError, match=problem):
        ChildSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_restarts": -1}, "max_restarts must be >= 0"),
        ({"window_s": 0}, "window_s must be > 0"),
        ({"backoff_initial_s": 2, "backoff_max_s": 1}, "backoff_initial_s <= backoff_max_s"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_invalid_policy_says_what_is_wrong(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]
