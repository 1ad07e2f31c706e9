"""Benchmark: how long the operator console takes to start and answer, against raw baselines
measured in the same run: a bare `python -c pass`, the import of nats-py's client, and a raw
nats-py request to the same daemon (a script that imports nats-py, connects with the operator's
nkey, sends one request to `agentd.ctl.status` and prints the reply: the floor of any NATS
console in Python).

A real daemon (embedded NATS, identity on, the echo agent) runs in a temporary directory; each
command runs `--rounds` times as a fresh process, as an operator runs it: `agentctl --help`,
`status`, `ps` and `send echo {}`. For each: the median wall time and CPU time (user + system of
the child), their ratios to the bare interpreter's and to the raw request's, and the CPU time
over the raw request's (what agentd's own code adds). On a loaded machine the CPU figures are
the ones to compare: wall time there is mostly waiting for a core. `--tree DIR` also measures
another checkout's agentctl (e.g. the main branch) in the same run, for a before/after.

Prints one JSON object.

    PYTHONPATH=. python bench/console.py [--rounds 15] [--tree /path/to/other/checkout]
    PYTHONPATH=. python bench/console.py --smoke     # two rounds: that it runs (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import running_daemon, write_config  # noqa: E402

# a raw nats-py request/reply to the daemon, as agentctl makes one (no aiohttp: agentctl hides it
# from nats-py for nats:// URLs); argv: URL, credentials file, subject. Unsigned, so the daemon
# answers with an error: the request and its reply are the same size as agentctl's status.
RAW_REQUEST = """
import asyncio, json, sys
sys.modules["aiohttp"] = None
import nats

async def main(url, creds_file, subject):
    creds = json.loads(open(creds_file).read())
    nc = await nats.connect(
        url, nkeys_seed_str=creds["nkey_seed"], inbox_prefix=creds["inbox_prefix"],
        allow_reconnect=False,
    )
    reply = await nc.request(subject, b'{"v": 1, "args": {}}', timeout=10)
    await nc.close()
    print(json.loads(reply.data)["v"])

asyncio.run(main(*sys.argv[1:]))
"""

BASELINES = {
    "python -c pass": ["-c", "pass"],
    "import nats client": ["-c", "import asyncio, nats.aio.client"],
    # the same without aiohttp (agentctl hides it from nats-py for nats:// and tls:// URLs)
    "import nats client, no aiohttp": [
        "-c",
        "import sys; sys.modules['aiohttp'] = None; import asyncio, nats.aio.client",
    ],
}


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one child process; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # `python -m` puts the working directory first on sys.path: run in the tree measured
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(
    argv: list[str], env: dict[str, str], rounds: int, cwd: Path = REPO
) -> dict[str, float]:
    run_once(argv, env, cwd)  # warm: .pyc files written, pages cached
    samples = [run_once(argv, env, cwd) for _ in range(rounds)]
    return {
        "wall_ms": round(statistics.median(w for w, _ in samples) * 1000, 1),
        "cpu_ms": round(statistics.median(c for _, c in samples) * 1000, 1),
    }


def raw_request(daemon: Any, env: dict[str, str], rounds: int) -> dict[str, float]:
    argv = ["-c", RAW_REQUEST, daemon.url, str(daemon.admin_creds), "agentd.ctl.status"]
    return measure([sys.executable, *argv], env, rounds)


def compile_tree(tree: Path) -> None:
    """Byte-compile a checkout's agentd, as an installed package is: where
    PYTHONDONTWRITEBYTECODE is set (it is in some shells here), every start would otherwise
    compile each module it imports from source, and time that instead of the imports."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "agentd")], check=True)


def console(daemon: Any, tree: Path, rounds: int) -> dict[str, dict[str, float]]:
    compile_tree(tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    base = [sys.executable, "-m", "agentd.cli.agentctl"]
    where = ["--url", daemon.url, "--config", str(daemon.config)]
    commands = {
        "--help": ["--help"],
        "status": [*where, "status"],
        "ps": [*where, "ps"],
        "send": [*where, "send", "echo", "{}"],
    }
    return {name: measure([*base, *args], env, rounds, tree) for name, args in commands.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tree", type=Path, help="also measure this checkout's agentctl")
    parser.add_argument("--smoke", action="store_true", help="two rounds: that it runs")
    args = parser.parse_args()
    rounds = 2 if args.smoke else args.rounds
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        config = write_config(Path(tmp), extra="[autoscale]\nenabled = false\n")
        with running_daemon(config) as daemon:
            baselines = {
                name: measure([sys.executable, *argv], env, rounds)
                for name, argv in BASELINES.items()
            }
            baselines["raw nats-py request"] = raw_request(daemon, env, rounds)
            trees = {"this": console(daemon, REPO, rounds)}
            if args.tree is not None:
                trees[str(args.tree)] = console(daemon, args.tree.resolve(), rounds)
            daemon.stop()
    bare = baselines["python -c pass"]
    raw = baselines["raw nats-py request"]
    result: dict[str, Any] = {
        "rounds": rounds,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "baselines": baselines,
    }
    for tree, figures in trees.items():
        result[tree] = {
            name: {
                **fig,
                "wall_vs_bare_python": round(fig["wall_ms"] / bare["wall_ms"], 2),
                "cpu_vs_bare_python": round(fig["cpu_ms"] / bare["cpu_ms"], 2),
                "cpu_over_bare_ms": round(fig["cpu_ms"] - bare["cpu_ms"], 1),
                "wall_vs_raw_request": round(fig["wall_ms"] / raw["wall_ms"], 2),
                "cpu_vs_raw_request": round(fig["cpu_ms"] / raw["cpu_ms"], 2),
                "cpu_over_raw_request_ms": round(fig["cpu_ms"] - raw["cpu_ms"], 1),
            }
            for name, fig in figures.items()
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
