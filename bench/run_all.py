"""Every benchmark in bench/, one after another, into one JSON report.

    .venv/bin/python bench/run_all.py [--smoke] [--only NAME ...] [--skip NAME ...]
                                      [--report PATH]        (`make bench`: full mode)

Each bench runs as its own process from the repository root, with the repository first on
PYTHONPATH (its daemons and workers run this tree too). The report (default
.agentd/bench-report.json, its path printed on stdout) holds, for each bench, its command line,
exit status, duration and the JSON it printed; a bench that fails, times out or prints something
other than JSON is reported and the next one still runs. Exit status 1 if any bench failed.

BENCHES is the table of every bench: tests/test_benches.py runs each in smoke mode (`--smoke`:
small counts, the same JSON shape, no figure judged) and checks that no script in bench/ is
missing from it. The vLLM benches need the vLLM environment ($AGENTD_VLLM_PYTHON, `make vllm`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests` (run as a script, only bench/ is on the path)

from tests.inference.vllm_server import vllm_python  # noqa: E402

BENCH_DIR = REPO / "bench"
DEFAULT_REPORT = REPO / ".agentd" / "bench-report.json"
TAIL_CHARS = 4000  # of a failed bench's stderr, in the report


@dataclass(frozen=True)
class Bench:
    """One script, bench/<name>.py, and how long each mode may take."""

    name: str
    smoke_timeout_s: float
    full_timeout_s: float = 1800.0
    vllm: bool = False  # starts vLLM servers from $AGENTD_VLLM_PYTHON
    # a test elsewhere that already runs its smoke mode ("" : tests/test_benches.py runs it)
    smoke_test: str = ""


BENCHES: tuple[Bench, ...] = (
    Bench("baseline", 60),
    Bench("echo", 120),
    Bench("runtime", 180, smoke_test="tests/test_hot_path_benches.py"),
    Bench("policy", 60),
    Bench("trace_log", 60),
    Bench("trace", 120, smoke_test="tests/test_hot_path_benches.py"),
    Bench("audit_reads", 60),
    Bench("telemetry", 60),
    Bench("identity", 60),
    Bench("cluster", 300),
    Bench("console", 120, smoke_test="tests/test_console_startup.py"),
    Bench("tools", 120, smoke_test="tests/tools/test_local_calls.py"),
    Bench("tools_mcp", 120, smoke_test="tests/tools/test_mcp_bench.py"),
    Bench("mcp_endpoint", 120, smoke_test="tests/test_mcp_endpoint_bench.py"),
    Bench("resume", 120, smoke_test="tests/worker/test_resume.py"),
    Bench("sandbox", 180, smoke_test="tests/security/test_sandbox.py"),
    Bench("tiny_model_vllm", 300, vllm=True),
    Bench("inference", 600, vllm=True),
)


def run_one(bench: Bench, *, smoke: bool, bench_dir: Path = BENCH_DIR) -> dict[str, Any]:
    """Run one bench; what the report says of it. Never raises for the bench's own failure."""
    argv = [sys.executable, str(bench_dir / f"{bench.name}.py"), *(["--smoke"] if smoke else [])]
    entry: dict[str, Any] = {"name": bench.name, "argv": argv[1:], "exit_status": None}
    if bench.vllm and not vllm_python().exists():
        entry.update(
            ok=False,
            duration_s=0.0,
            output=None,
            error=f"no vLLM interpreter at {vllm_python()} (run `make vllm`, or set "
            "AGENTD_VLLM_PYTHON=DIR/bin/python)",
        )
        return entry
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p)}
    timeout_s = bench.smoke_timeout_s if smoke else bench.full_timeout_s
    problems: list[str] = []
    started = time.monotonic()
    # its own process group: a bench that runs over its time gets SIGINT (its `finally` blocks
    # stop the daemons it started, which live in their own groups), then SIGKILL
    with subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _interrupt(proc)
            stdout, stderr = proc.communicate()
            problems.append(f"timed out after {timeout_s:.0f} s")
    entry["exit_status"] = proc.returncode
    entry["duration_s"] = round(time.monotonic() - started, 2)
    if proc.returncode != 0 and not problems:
        problems.append(f"exited with status {proc.returncode}")
    try:
        entry["output"] = json.loads(stdout)
    except json.JSONDecodeError as exc:
        entry["output"] = None
        problems.append(f"stdout is not one JSON document ({exc}): {stdout[-500:]!r}")
    if problems:
        entry["error"] = "; ".join(problems)
    entry["ok"] = "error" not in entry
    if not entry["ok"]:
        entry["stderr_tail"] = stderr[-TAIL_CHARS:]
    return entry


def _interrupt(proc: subprocess.Popen[str], grace_s: float = 30.0) -> None:
    """SIGINT the process group of `proc`; SIGKILL it if `proc` is still there after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_benches(
    benches: Sequence[Bench], *, smoke: bool, report: Path, bench_dir: Path = BENCH_DIR
) -> int:
    """Run `benches` in order, write the report to `report`; 0 if every one succeeded."""
    started = datetime.now(UTC)
    results = []
    for index, bench in enumerate(benches, 1):
        print(f"[{index}/{len(benches)}] {bench.name} ...", file=sys.stderr, flush=True)
        entry = run_one(bench, smoke=smoke, bench_dir=bench_dir)
        verdict = "ok" if entry["ok"] else f"FAILED: {entry['error']}"
        print(f"    {verdict} ({entry['duration_s']} s)", file=sys.stderr, flush=True)
        results.append(entry)
    failed = [entry["name"] for entry in results if not entry["ok"]]
    body = {
        "mode": "smoke" if smoke else "full",
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        # other work on the same cores moves every figure: the load says how much there was
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "failed": failed,
        "benches": results,
    }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(body, indent=2) + "\n")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small counts: that each one runs")
    names = [bench.name for bench in BENCHES]
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help="just these")
    parser.add_argument("--skip", nargs="+", choices=names, metavar="NAME", default=[])
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="the JSON report")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHES if (args.only is None or b.name in args.only)]
    chosen = [b for b in chosen if b.name not in args.skip]
    status = run_benches(chosen, smoke=args.smoke, report=args.report)
    print(args.report.resolve())
    return status


if __name__ == "__main__":
    sys.exit(main())
