"""The hot-path benches (bench/runtime.py: the routed path against raw JetStream; bench/trace.py:
the trace path against raw chained SQLite inserts) run in smoke mode and report their ratios:
small counts, no figure asserted beyond being there, so neither can break unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def smoke(script: str, timeout_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures: dict[str, Any] = json.loads(out.stdout)
    assert figures["smoke"] is True
    return figures


@pytest.mark.timeout(360)  # a daemon, replicas, and every measurement once
def test_the_runtime_bench_runs_in_smoke_mode() -> None:
    figures = smoke("runtime.py", 300)
    for ratio in (
        "ratio_delivery_hop_p50",
        "ratio_routed_publish_throughput",
        "ratio_echo_throughput_vs_raw_publish_consume",
    ):
        assert figures[ratio] > 0, ratio
    assert figures["kill_to_ready_s"] > 0 and figures["one_replica_noop_runs_per_s"] > 0


@pytest.mark.timeout(360)
def test_the_trace_bench_runs_in_smoke_mode() -> None:
    figures = smoke("trace.py", 300)
    # every record reached the log once, and the log verifies
    assert figures["records"] == 400 and figures["lost"] == 0
    assert figures["duplicates_stored"] == 0 and figures["verify_ok"] is True
    assert figures["ratio"] > 0 and figures["cpu_ratio_daemon"] > 0
