"""The sandbox's cost: replica spawn-to-ready (`scale echo 1 -> 2`, answered once the new
replica is ready) and the echo round trip, with [sandbox].mode = "enforce" (a uid per agent
when run as root), "enforce" with users = "off", and "off", three daemons side by side,
measured alternately in the same run; and an isolated tool call (the shipped `sql.query`, one
`SELECT`, through the tool host as the gateway runs it: a child process per call) with its
sandbox and without, alternately. Ratios: each mode / off.

Run: .venv/bin/python bench/sandbox.py [--smoke] [--tools-only]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentiles  # noqa: E402

from agentd.cli._client import ControlClient  # noqa: E402
from agentd.config import load_config  # noqa: E402
from agentd.daemon._sandbox import host_abi  # noqa: E402
from agentd.daemon._tool_sandbox import tool_sandboxes  # noqa: E402
from agentd.tools import ToolRegistry, run_tool  # noqa: E402
from tests.harness import DaemonProcess, admin_credentials, write_config  # noqa: E402

MODES = ("enforce", "off")
# each daemon's [sandbox]: enforce with a uid per agent (the default when the daemon runs as
# root), enforce with the daemon's uid (users = "off"), and no sandbox
DAEMONS = {
    "enforce": 'mode = "enforce"\n',
    "enforce_same_uid": 'mode = "enforce"\nusers = "off"\n',
    "off": 'mode = "off"\n',
}
REPO = Path(__file__).resolve().parents[1]


async def spawn_to_ready(ctl: ControlClient) -> float:
    t0 = time.perf_counter()
    await ctl.call("scale", {"agent": "echo", "replicas": 2}, timeout_s=60)
    elapsed = time.perf_counter() - t0
    await ctl.call("scale", {"agent": "echo", "replicas": 1}, timeout_s=60)
    return elapsed


async def echo_round_trip(ctl: ControlClient, i: int) -> float:
    reply_to = ctl.subjects.reply("ctl", f"bench{i}")
    sub = await ctl.nc.subscribe(reply_to, max_msgs=1)
    t0 = time.perf_counter()
    await ctl.call("send", {"to": "echo", "payload": {"i": i}, "reply_to": reply_to})
    msg = await sub.next_msg(timeout=10)
    elapsed = time.perf_counter() - t0
    assert json.loads(msg.data)["output"] == {"i": i}
    return elapsed


async def measure(urls: dict[str, str], spawns: int, rounds: int) -> dict[str, Any]:
    modes = list(urls)
    samples: dict[str, dict[str, list[float]]] = {m: {"spawn": [], "echo": []} for m in modes}
    clients = {m: ControlClient(urls[m], credentials=admin_credentials(urls[m])) for m in modes}
    for client in clients.values():
        await client.__aenter__()
    try:
        for i in range(rounds + 20):  # alternate, the first 20 warm up
            for mode in modes if i % 2 else reversed(modes):
                elapsed = await echo_round_trip(clients[mode], i)
                if i >= 20:
                    samples[mode]["echo"].append(elapsed)
        for i in range(spawns):
            for mode in modes if i % 2 else reversed(modes):
                samples[mode]["spawn"].append(await spawn_to_ready(clients[mode]))
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)
    out: dict[str, Any] = {}
    for mode in modes:
        out[mode] = {
            "spawn_to_ready": percentiles(samples[mode]["spawn"]),
            "echo_round_trip": percentiles(samples[mode]["echo"]),
        }
    med = {m: {k: statistics.median(v) for k, v in samples[m].items()} for m in modes}
    for mode in modes:
        if mode != "off":
            out[f"ratio_{mode}_over_off"] = {
                "spawn_to_ready_median": round(med[mode]["spawn"] / med["off"]["spawn"], 3),
                "echo_round_trip_median": round(med[mode]["echo"] / med["off"]["echo"], 3),
            }
    return out


async def isolated_tool_calls(directory: Path, calls: int) -> dict[str, Any]:
    """sql.query run by the tool host, sandboxed and not, alternately (the first two warm)."""
    state = directory / "state"
    (directory / "agentd.toml").write_text(
        f'[daemon]\nstate_dir = "{state}"\n[tools]\ndir = "{REPO / "tools"}"\n'
    )
    config = load_config(directory / "agentd.toml").config
    os.environ["AGENTD_STATE_DIR"] = str(state)  # as the daemon sets it for its tools
    registry = ToolRegistry.load(config.tools.dir)
    box = tool_sandboxes(config, registry, abi=host_abi())["sql.query"]
    spec = registry.get("sql.query")
    assert spec is not None
    args = spec.validate({"query": "SELECT count(*) AS n FROM applications"})
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(calls + 2):
        for mode in MODES if i % 2 else reversed(MODES):
            t0 = time.perf_counter()
            rows = await run_tool(
                spec, args, timeout_s=60, sandbox=box if mode == "enforce" else None
            )
            elapsed = time.perf_counter() - t0
            assert rows == [{"n": 4}], rows
            if i >= 2:
                samples[mode].append(elapsed)
    med = {m: statistics.median(v) for m, v in samples.items()}
    return {
        **{m: percentiles(samples[m]) for m in MODES},
        "ratio_enforce_over_off_median": round(med["enforce"] / med["off"], 3),
        "rules": len(box.plan.fs),
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="small counts (the tests run it)")
    parser.add_argument("--tools-only", action="store_true", help="the isolated tool call only")
    args = parser.parse_args()
    spawns, rounds = (2, 10) if args.smoke else (20, 300)
    tool_calls = 3 if args.smoke else 30
    with tempfile.TemporaryDirectory() as tmp:
        tools = asyncio.run(isolated_tool_calls(Path(tmp), tool_calls))
        if args.tools_only:
            print(json.dumps({"isolated_tool_call": tools}, indent=2))
            return
        daemons = {}
        try:
            for mode, sandbox in DAEMONS.items():
                folder = Path(tmp) / mode
                folder.mkdir()
                extra = f"[autoscale]\nenabled = false\n\n[sandbox]\n{sandbox}"
                daemons[mode] = DaemonProcess(write_config(folder, extra=extra))
            for daemon in daemons.values():
                daemon.wait_ready()
            result = asyncio.run(measure({m: d.url for m, d in daemons.items()}, spawns, rounds))
        finally:
            for daemon in daemons.values():
                daemon.close()
    result["isolated_tool_call"] = tools
    result["counts"] = {"spawns": spawns, "echo_rounds": rounds, "tool_calls": tool_calls}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
