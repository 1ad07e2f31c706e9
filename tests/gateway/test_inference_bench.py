"""bench/inference.py --smoke --phases isolated: the gateway (with its token budget in a
JetStream KV bucket, as in the daemon) against the fixed-latency upstream, no vLLM; its figures
come out and the budget was charged for the calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def test_the_inference_bench_smoke_runs_and_charges_the_budget() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "inference.py"), "--smoke", "--phases", "isolated"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)["gateway_vs_fixed_latency_upstream"]
    assert figures["throughput_ratio"] > 0 and figures["throughput_ratio_1_client"] > 0
    assert figures["requests"]["gateway"] > 0
    # every call reserved and settled: ~44 tokens each (12 in + 32 out) stayed spent
    assert figures["budget_spent_tokens"] >= 40 * figures["requests"]["gateway"]
