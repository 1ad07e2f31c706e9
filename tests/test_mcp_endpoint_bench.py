"""bench/mcp_endpoint.py runs (smoke mode: a few calls per path) and reports its ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.harness import REPO


def test_the_mcp_endpoint_bench_runs_in_smoke_mode() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "mcp_endpoint.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert set(figures["latency"]) == {"plain_mcp", "gateway", "mcp"}
    assert figures["ratio_p50_mcp_vs_plain_mcp"] > 0 and figures["ratio_p50_mcp_vs_gateway"] > 0
    # every governed call left its records (requested + executed), MCP or not
    assert figures["records"] >= 2 * 2 * figures["calls_per_path"]
