"""The thin path, measured: daemon start-to-READY, idle memory, and the echo round trip
(agentctl's path: control plane -> router -> JetStream inbox -> worker -> reply) beside raw NATS
request/reply to a responder process on the same embedded nats-server, in the same run.

Run: .venv/bin/python bench/echo.py   (prints JSON)
"""

from __future__ import annotations

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
from tests.harness import DaemonProcess, descendants, write_config  # noqa: E402

ROUNDS = 500


async def echo_round_trips(url: str, n: int) -> list[float]:
    samples = []
    async with ControlClient(url) as ctl:
        for i in range(n + 50):
            reply_to = ctl.subjects.reply("ctl", f"bench{i}")
            sub = await ctl.nc.subscribe(reply_to, max_msgs=1)
            t0 = time.perf_counter()
            await ctl.call("send", {"to": "echo", "payload": {"i": i}, "reply_to": reply_to})
            msg = await sub.next_msg(timeout=10)
            elapsed = time.perf_counter() - t0
            assert json.loads(msg.data)["output"] == {"i": i}
            if i >= 50:  # the first 50 warm up
                samples.append(elapsed)
    return samples


async def raw_request_reply(url: str, n: int) -> list[float]:
    import nats

    nc = await nats.connect(url)
    samples = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        await nc.request("bench.echo", b'{"i": 1}', timeout=5)
        if i >= 50:
            samples.append(time.perf_counter() - t0)
    await nc.close()
    return samples


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp))
        t0 = time.perf_counter()
        daemon = DaemonProcess(config)
        try:
            daemon.wait_ready()
            ready_s = time.perf_counter() - t0
            time.sleep(3)  # settle, then measure idle memory
            memory: dict[str, float] = {"agentd": rss_mb(daemon.pid)}
            for pid in descendants(daemon.pid):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                name = "nats-server" if cmd[0].endswith(b"nats-server") else "echo-replica"
                memory[name] = memory.get(name, 0) + rss_mb(pid)
            with responder(daemon.url):
                raw = asyncio.run(raw_request_reply(daemon.url, ROUNDS))
            echo = asyncio.run(echo_round_trips(daemon.url, ROUNDS))
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
