"""Rate limits: token buckets per (agent, tool), per (agent, model) in tokens, per tool overall."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from agentd.errors import RateLimited
from agentd.policy import (
    DecisionPoint,
    PolicyError,
    RateKey,
    RateLimiter,
    RateLimits,
    load_policy,
)
from agentd.policy._limits import parse_limits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(text: str) -> RateLimits:
    return parse_limits("limits.toml", text)


LIMITS = """
[[limit]]
agent = "*"
tool = "credit.score"
per_second = 20
burst = 20

[[limit]]
agent = "*"
model = "main"
per_minute = 60000
burst = 2000
"""


def test_ten_times_the_limit_for_ten_seconds_is_held_within_five_percent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(_limits(LIMITS), clock=clock)
    rate, burst, seconds = 20, 20, 10
    allowed = {"intake": 0, "underwriter": 0}
    refused = 0
    step = 1 / (10 * rate)  # intake tries at ten times its limit
    for i in range(int(seconds / step)):
        clock.now = 1000.0 + i * step
        try:
            limiter.acquire(RateKey.agent_tool("intake", "credit.score"))
            allowed["intake"] += 1
        except RateLimited as exc:
            refused += 1
            assert 0 < exc.retry_after_s <= 1 / rate + 1e-9
        if i % 20 == 0:  # underwriter at half its limit, in the same ten seconds
            limiter.acquire(RateKey.agent_tool("underwriter", "credit.score"))
            allowed["underwriter"] += 1
    expected = rate * seconds + burst
    assert abs(allowed["intake"] - expected) <= 0.05 * expected, allowed
    assert refused == 2000 - allowed["intake"]
    assert allowed["underwriter"] == 100  # never refused: other agents are unaffected


def test_real_clock_at_ten_times_the_limit_with_threads() -> None:
    limits = _limits(LIMITS.replace("per_second = 20\nburst = 20", "per_second = 200\nburst = 20"))
    limiter = RateLimiter(limits)
    counts = {"intake": 0, "underwriter": 0}
    stop = threading.Event()

    def hammer() -> None:  # far more than ten times 200/s
        while not stop.is_set():
            try:
                limiter.acquire(RateKey.agent_tool("intake", "credit.score"))
                counts["intake"] += 1
            except RateLimited:
                pass

    def steady() -> None:  # 50 calls/s, a quarter of its own limit
        while not stop.is_set():
            limiter.acquire(RateKey.agent_tool("underwriter", "credit.score"))
            counts["underwriter"] += 1
            stop.wait(0.02)

    threads = [threading.Thread(target=hammer), threading.Thread(target=steady)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    stop.wait(2.0)
    stop.set()
    elapsed = time.monotonic() - start
    for thread in threads:
        thread.join(timeout=5)
    expected = 200 * elapsed + 20
    assert abs(counts["intake"] - expected) <= 0.05 * expected, (counts, elapsed)
    assert counts["underwriter"] >= 50  # never refused, so it ran at its own pace


def test_tokens_per_minute_per_agent_and_model() -> None:
    clock = FakeClock()
    limiter = RateLimiter(_limits(LIMITS), clock=clock)
    key = RateKey.agent_model("intake", "main")
    limiter.acquire(key, 1500)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(key, 1000)
    assert caught.value.retry_after_s == pytest.approx(0.5)  # 500 missing at 1000 tokens/s
    limiter.acquire(RateKey.agent_model("echo", "main"), 2000)  # echo has its own bucket
    clock.now += 0.5
    limiter.acquire(key, 1000)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(key, 2001)
    assert caught.value.retry_after_s == math.inf  # more than the burst: never
    limiter.charge(key, 600)  # actual tokens after a call: may go into debt
    assert limiter.available(key) == pytest.approx(-600)
    assert limiter.available(RateKey.agent_model("intake", "other")) is None


def test_a_tool_overall_limit_is_shared_and_checked_atomically(policy_dir: Path) -> None:
    clock = FakeClock()
    point = DecisionPoint.from_dir(policy_dir, clock=clock)
    limiter = point.limiter
    # http.fetch: per agent 2/s burst 10, overall 20/s burst 40 (policies/limits.toml)
    for agent in ("a1", "a2", "a3", "a4"):
        for _ in range(10):
            limiter.acquire_tool_call(agent, "http.fetch")
    with pytest.raises(RateLimited) as caught:
        limiter.acquire_tool_call("a5", "http.fetch")  # its own bucket is full, the tool's not
    assert "limits.toml:22 for tool http.fetch" in str(caught.value)
    assert caught.value.retry_after_s == pytest.approx(1 / 20)
    # The refused call took nothing from a5's own bucket.
    assert limiter.available(RateKey.agent_tool("a5", "http.fetch")) == 10
    with pytest.raises(RateLimited) as caught:
        limiter.acquire_tool_call("a1", "http.fetch")
    assert caught.value.retry_after_s == pytest.approx(0.5)  # a1's own bucket is the slower
    limiter.acquire_tool_call("a1", "sql.query")  # other tools are unaffected


def test_reload_keeps_buckets_of_unchanged_limits(policy_dir: Path) -> None:
    clock = FakeClock()
    point = DecisionPoint.from_dir(policy_dir, clock=clock)
    score = RateKey.agent_tool("intake", "credit.score")
    query = RateKey.agent_tool("intake", "sql.query")
    for _ in range(10):
        point.limiter.acquire(score)
    for _ in range(20):
        point.limiter.acquire(query)
    limits = policy_dir / "limits.toml"
    limits.write_text(
        limits.read_text().replace(
            'tool = "sql.query"\nper_second = 10\nburst = 20',
            'tool = "sql.query"\nper_second = 10\nburst = 50',
        )
    )
    point.reload()
    with pytest.raises(RateLimited):  # unchanged limit: still empty, a reload does not refill
        point.limiter.acquire(score)
    assert point.limiter.available(query) == 0  # changed limit: tokens kept, not refilled
    clock.now += 10
    assert point.limiter.available(query) == 50  # and the new burst applies


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            '[[limit]]\ntool = "a"\nmodel = "m"\nagent = "x"\nper_second = 1\nburst = 1\n',
            1,
            "exactly one of tool or model",
        ),
        ('[[limit]]\ntool = "a"\nper_second = 1\n', 1, "needs 'burst'"),
        ('[[limit]]\ntool = "a"\nper_second = -1\nburst = 1\n', 3, "per_second must be positive"),
        (
            '[[limit]]\ntool = "a"\nper_second = 1\nburst = 1\n\n[[limit]]\ntool = "a"\n'
            "per_minute = 5\nburst = 2\n",
            6,
            "already at line 1",
        ),
        ('[[limit]]\ntool = "a"\nper_second = 1\nburst = "lots"\n', 4, "burst"),
        (
            '[[limit]]\ntool = "a"\nper_second = 1\nburst = 1\nper_hour = 3\n',
            5,
            "unknown field 'per_hour'",
        ),
        ('[[limit]]\ntool = "a"\nper_second = 1\nburst = 1\n[[limit]\n', 5, "TOML syntax error"),
        ('[[limit]]\nmodel = "main"\nper_minute = 1\nburst = 1\n', 2, "a model limit is per agent"),
        ('[[limits]]\ntool = "a"\n', 1, "unknown table or key 'limits'"),
    ],
)
def test_a_malformed_limits_file_is_rejected_with_line(
    policy_dir: Path, text: str, line: int, reason: str
) -> None:
    (policy_dir / "limits.toml").write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    problems = caught.value.problems
    assert any(
        p.startswith(f"limits.toml:{line}:")
        and reason.replace(" must be positive", " must be a positive") in p
        for p in problems
    ), problems
