"""Benchmark: what identity costs, against raw NATS figures measured in the same run.

- apply: issue one more agent identity and make a running nats-server (with `--identities`
  users) enforce it (write config, SIGHUP, probe), against a raw nats-py connect + close.
- revoke: revoke an identity with a live connection; time until the server closes that
  connection (the revocation bound), against the same raw connect.
- signed control request: sign_request + verify_request per request, against a raw core-NATS
  request/reply round trip to a responder in another process.

Prints one JSON object.

    .venv/bin/python bench/identity.py [--identities 50] [--rounds 30] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests` (a fresh clone)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    NATS_SERVER,
    free_port,
    nats_server,
    percentiles,
    responder,
    wait_port,
)

from agentd.bus import Credentials, Subjects, nats_server_config  # noqa: E402
from agentd.config import EmbeddedNatsConfig  # noqa: E402
from agentd.identity import IdentityBook, ServerAuth, sign_request, verify_request  # noqa: E402
from tests.security.support import RawConnection  # noqa: E402


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url


async def measure(
    book: IdentityBook, auth: ServerAuth, url: str, rounds: int
) -> dict[str, list[float]]:
    daemon_opts = book.daemon.connect_options()
    raw_connect, apply, revoke_close = [], [], []
    for i in range(rounds):
        started = time.perf_counter()
        nc = await nats.connect(url, **daemon_opts)
        await nc.close()
        raw_connect.append(time.perf_counter() - started)

        creds, _ = book.ensure_agent(f"round{i}")
        started = time.perf_counter()
        await auth.apply()
        apply.append(time.perf_counter() - started)

        conn, hello = await RawConnection.open(_Url(url), creds)  # type: ignore[arg-type]
        assert hello == b"PONG", hello
        started = time.perf_counter()
        book.revoke(f"agent:round{i}")
        await auth.apply()
        await conn.closed_by_server(timeout_s=5)
        revoke_close.append(time.perf_counter() - started)
        await conn.aclose()
    creds = Credentials.load(book.issue_operator("bench", "admin"))
    body = b'{"v": 1, "args": {"agent": "echo"}}'
    signing = []
    for _ in range(rounds * 20):
        started = time.perf_counter()
        headers = sign_request(creds, "agentd.ctl.status", body)
        verify_request(book, "agentd.ctl.status", body, headers)
        signing.append(time.perf_counter() - started)
    return {
        "raw_connect": raw_connect,
        "apply": apply,
        "revoke_to_close": revoke_close,
        "sign_and_verify": signing,
    }


async def raw_request_reply(url: str, count: int) -> list[float]:
    samples = []
    nc = await nats.connect(url)
    try:
        for _ in range(count):
            started = time.perf_counter()
            await nc.request("bench.echo", b'{"v": 1}', timeout=5)
            samples.append(time.perf_counter() - started)
    finally:
        await nc.close()
    return samples


def run(identities: int, rounds: int, folder: Path) -> dict[str, object]:
    book = IdentityBook(folder / "state", Subjects(), Path("credentials/bootstrap.token"))
    for i in range(identities):
        book.ensure_agent(f"agent{i}")
    port = free_port()
    cfg = EmbeddedNatsConfig(port=port)
    url = f"nats://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    auth = ServerAuth(
        book,
        config_file=folder / "nats-server.conf",
        render_config=lambda block: nats_server_config(cfg, folder / "js", block),
        server_pid=lambda: procs[0].pid,
        url=url,
    )
    auth.write()
    procs.append(
        subprocess.Popen(
            [str(NATS_SERVER), "--config", str(folder / "nats-server.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        wait_port(port)
        samples = anyio.run(measure, book, auth, url, rounds)
    finally:
        procs[0].terminate()
        procs[0].wait(10)
    with nats_server(folder / "raw") as raw_url, responder(raw_url):
        samples["raw_request_reply"] = anyio.run(raw_request_reply, raw_url, rounds * 20)
    p = {k: percentiles(v) for k, v in samples.items()}
    return {
        "identities": identities,
        "rounds": rounds,
        **p,
        "apply_vs_raw_connect": round(p["apply"]["p50_us"] / p["raw_connect"]["p50_us"], 2),
        "revoke_to_close_vs_raw_connect": round(
            p["revoke_to_close"]["p50_us"] / p["raw_connect"]["p50_us"], 2
        ),
        "signing_vs_raw_request_reply": round(
            p["sign_and_verify"]["p50_us"] / p["raw_request_reply"]["p50_us"], 3
        ),
        "revocation_bound_ms_max": round(max(samples["revoke_to_close"]) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="5 identities, 3 rounds (tests)")
    args = parser.parse_args()
    identities, rounds = (5, 3) if args.smoke else (args.identities, args.rounds)
    with tempfile.TemporaryDirectory() as folder:
        result = run(identities, rounds, Path(folder))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
