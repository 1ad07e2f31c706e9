"""The thin path, measured: daemon start-to-READY, idle memory, and the echo round trip
(agentctl's path: control plane -> router -> JetStream inbox -> worker -> reply) beside raw NATS
request/reply to a responder process on the same embedded nats-server, in the same run.

Identity is on in the daemon (the default): the raw responder and client connect with the
daemon's own credentials, agentctl's path with the default admin's.

Run: .venv/bin/python bench/echo.py [--rounds 500] [--smoke]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentiles, responder, rss_mb  # noqa: E402

from agentd.cli._client import ControlClient  # noqa: E402
from tests.harness import (  # noqa: E402
    DaemonProcess,
    admin_credentials,
    descendants,
    nats_options,
    write_config,
)


async def echo_round_trips(url: str, n: int, warm: int) -> list[float]:
    samples = []
    async with ControlClient(url, credentials=admin_credentials(url)) as ctl:
        for i in range(n + warm):
            reply_to = ctl.subjects.reply("ctl", f"bench{i}")
            sub = await ctl.nc.subscribe(reply_to, max_msgs=1)
            t0 = time.perf_counter()
            await ctl.call("send", {"to": "echo", "payload": {"i": i}, "reply_to": reply_to})
            msg = await sub.next_msg(timeout=10)
            elapsed = time.perf_counter() - t0
            assert json.loads(msg.data)["output"] == {"i": i}
            if i >= warm:  # the first ones warm up
                samples.append(elapsed)
    return samples


async def raw_request_reply(url: str, n: int, warm: int) -> list[float]:
    import nats

    nc = await nats.connect(url, **nats_options(url))
    samples = []
    for i in range(n + warm):
        t0 = time.perf_counter()
        await nc.request("bench.echo", b'{"i": 1}', timeout=5)
        if i >= warm:
            samples.append(time.perf_counter() - t0)
    await nc.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--smoke", action="store_true", help="20 rounds, no settling (tests)")
    args = parser.parse_args()
    rounds, warm, settle_s = (20, 5, 0.5) if args.smoke else (args.rounds, 50, 3.0)
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp))
        t0 = time.perf_counter()
        daemon = DaemonProcess(config)
        try:
            daemon.wait_ready()
            ready_s = time.perf_counter() - t0
            time.sleep(settle_s)  # settle, then measure idle memory
            memory: dict[str, float] = {"agentd": rss_mb(daemon.pid)}
            for pid in descendants(daemon.pid):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                name = "nats-server" if cmd[0].endswith(b"nats-server") else "echo-replica"
                memory[name] = memory.get(name, 0) + rss_mb(pid)
            with responder(daemon.url, daemon.nats_options()):
                raw = asyncio.run(raw_request_reply(daemon.url, rounds, warm))
            echo = asyncio.run(echo_round_trips(daemon.url, rounds, warm))
            assert daemon.stop() == 0
        finally:
            daemon.close()
    raw_p, echo_p = percentiles(raw), percentiles(echo)
    result: dict[str, Any] = {
        "benchmark": "echo",
        "start_to_ready_s": round(ready_s, 3),
        "idle_rss_mb": memory,
        "raw_nats_request_reply": raw_p,
        "echo_round_trip": echo_p,
        "ratio_p50": round(echo_p["p50_us"] / raw_p["p50_us"], 2),
        "ratio_p99": round(echo_p["p99_us"] / raw_p["p99_us"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
