"""Restart intensity and backoff: when to restart a crashing child, and when to give up."""

from __future__ import annotations

import random
from collections import deque

from agentd.supervisor._spec import RestartPolicy

__all__ = ["RestartIntensity", "backoff_delay"]


def backoff_delay(policy: RestartPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """The delay before restart number `attempt` (1-based) of a crash loop, jitter included."""
    exponent = max(attempt - 1, 0)
    # Cap the exponent first: 2**1000 as a float overflows long before the cap would apply.
    base = min(policy.backoff_initial_s * 2.0 ** min(exponent, 64), policy.backoff_max_s)
    if policy.jitter == 0:
        return base
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    return base * (1.0 + spread)


class RestartIntensity:
    """One child's recent restarts, as OTP counts them: at most `max_restarts` per `window_s`."""

    def __init__(self, policy: RestartPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._restart_times: deque[float] = deque()
        self._crash_streak = 0

    @property
    def recent(self) -> int:
        """Restarts counted in the current window (as of the last `next_delay` call)."""
        return len(self._restart_times)

    def next_delay(self, *, now: float, ran_s: float) -> float | None:
        """Record a restart at `now` and return its backoff; None if it exceeds the intensity.

        `ran_s` is how long the process that just ended had been up: a process that lasted a
        whole window ends the crash streak, so its successor's backoff starts from the bottom.
        """
        policy = self._policy
        if ran_s >= policy.window_s:
            self._crash_streak = 0
        while self._restart_times and self._restart_times[0] <= now - policy.window_s:
            self._restart_times.popleft()
        if len(self._restart_times) >= policy.max_restarts:
            return None
        self._restart_times.append(now)
        self._crash_streak += 1
        return backoff_delay(policy, self._crash_streak, self._rng)
