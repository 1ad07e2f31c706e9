"""bench/tools_mcp.py runs (smoke mode): an MCP tool through the gateway and the SDK's client
calling the same server directly, in one run, with their ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_mcp_bench_runs_in_smoke_mode() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "tools_mcp.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["calls_per_path"] == 20
    for path in ("direct", "session", "gateway"):
        assert figures["latency"][path]["p50_us"] > 0
    assert figures["ratio_vs_direct"]["gateway"]["p50"] > 0
    # every gateway call was recorded: requested and executed at least
    assert figures["records"] >= 2 * 20
