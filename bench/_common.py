"""Shared helpers for benchmarks: percentiles, a bare nats-server, a responder process."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NATS_SERVER = Path(sys.executable).parent / "nats-server"

RESPONDER = """
import asyncio, json, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1], **json.loads(sys.stdin.readline()))
    async def echo(msg):
        await msg.respond(msg.data)
    await nc.subscribe("bench.echo", cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_us": round(q[49] * 1e6, 1),
        "p99_us": round(q[98] * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@contextmanager
def nats_server(store: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(NATS_SERVER), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def responder(url: str, options: dict[str, Any] | None = None) -> Iterator[None]:
    """A core-NATS echo responder in another process (request/reply crosses processes).
    `options`: nats.connect() keyword arguments (JSON-able), e.g. a daemon's credentials; they
    go through its stdin, not its command line, which any user can read."""
    argv = [sys.executable, "-c", RESPONDER, url]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(options or {}) + "\n")
        proc.stdin.close()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def timed(calls: int, one: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Seconds each of `calls` sequential awaits of `one(i)` took."""
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await one(i)
        samples.append(time.perf_counter() - started)
    return samples
