"""The autoscaler: its policy alone, then a real daemon scaling an agent on its backlog."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentd.config import AutoscaleConfig
from agentd.daemon._autoscaler import desired_replicas
from tests.harness import (
    TEST_AGENTS,
    decision_records,
    running_daemon,
    send_and_collect,
    write_config,
)

CFG = AutoscaleConfig(scale_up_at=1.0, scale_down_at=0.3)


def target(current: int, backlog: int, *, concurrency: int = 2, low: int = 1, high: int = 4) -> int:
    return desired_replicas(
        current=current, backlog=backlog, concurrency=concurrency, low=low, high=high, cfg=CFG
    )[0]


def test_scales_up_to_what_the_backlog_needs_at_most_doubling() -> None:
    assert target(1, 3) == 2  # load 1.5
    assert target(1, 100) == 2  # needs 50, doubles at most
    assert target(2, 100) == 4
    assert target(4, 100) == 4  # capped at max


def test_hysteresis_between_the_thresholds() -> None:
    assert target(2, 4) == 2  # load 1.0: not above scale_up_at
    assert target(2, 2) == 2  # load 0.5: inside the band
    assert target(2, 1) == 1  # load 0.25: below scale_down_at, one step down
    assert target(1, 0) == 1  # never below min


def test_below_min_comes_back_to_min() -> None:
    assert target(0, 0, low=2) == 2


def test_the_reason_names_the_inputs() -> None:
    _, reason = desired_replicas(current=1, backlog=9, concurrency=2, low=1, high=4, cfg=CFG)
    assert "load 4.50 > 1.0" in reason and "backlog 9" in reason


def test_rejects_thresholds_without_hysteresis() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        AutoscaleConfig(scale_up_at=0.5, scale_down_at=0.5)


@pytest.mark.integration
def test_a_backlog_scales_the_agent_up_and_idleness_back_down(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    spec = (TEST_AGENTS / "slow" / "agent.toml").read_text().replace("autoscale = false", "")
    (agents / "slow").mkdir()
    (agents / "slow" / "agent.toml").write_text(spec)
    (agents / "slow" / "slow_graph.py").write_text(
        (TEST_AGENTS / "slow" / "slow_graph.py").read_text()
    )
    config = write_config(
        tmp_path,
        agents_dir=agents,
        extra="[autoscale]\ninterval_s = 0.3\ncooldown_s = 0.6\n",
    )
    with running_daemon(config) as daemon:
        results = anyio.run(
            lambda: send_and_collect(daemon.url, "slow", [{"i": i} for i in range(150)])
        )
        assert len(results) == 150

        def replicas() -> int:
            agents_ps: list[dict[str, Any]] = json.loads(daemon.agentctl("--json", "ps").stdout)
            return len(agents_ps[0]["replicas"])

        deadline = time.monotonic() + 30
        while replicas() > 1:
            assert time.monotonic() < deadline, "did not scale back down when idle"
            time.sleep(0.3)
        assert daemon.stop() == 0
    scaled = [r for r in decision_records(tmp_path / "state", "agent.scaled") if r["reason"]]
    ups = [r for r in scaled if r["reason"].startswith("autoscaler: load") and ">" in r["reason"]]
    downs = [r for r in scaled if "<" in r["reason"]]
    assert ups and downs, scaled
    assert max(int(r["decision"].split("->")[1]) for r in ups) >= 3
    assert {"pending", "unacked", "replicas", "concurrency"} <= set(ups[0]["inputs"])
