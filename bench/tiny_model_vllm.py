"""Benchmark the tiny model on a real vLLM server (CPU build), pinned to one core.

    .venv/bin/python bench/tiny_model_vllm.py [--tool-calls N] [--core C] [--smoke]

Prints one JSON object: model build time, server startup to /health, resident memory, valid
strict tool calls and JSON-schema outputs out of N, and completion latencies. There is no raw
baseline to divide by: the server is the baseline that agentd's LLM gateway will be measured
against. Takes 45-90 s, most of it vLLM's startup.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests` (a fresh clone)

import httpx  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from agentd.inference import build_tiny_model  # noqa: E402
from tests.inference.tool_schemas import Report, tool_call_problems, tool_request  # noqa: E402
from tests.inference.vllm_server import VllmServer  # noqa: E402

MODEL = "tiny"


def timed_ms(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.post(path, json={"model": MODEL, **body})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def median_ms(client: httpx.Client, body: dict[str, Any], runs: int) -> float:
    return round(
        statistics.median(timed_ms(client, "/completions", body)[0] for _ in range(runs)), 1
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool-calls", type=int, default=20, help="tool-call requests (20)")
    parser.add_argument("--core", default="1", help="VLLM_CPU_OMP_THREADS_BIND (1)")
    parser.add_argument("--smoke", action="store_true", help="2 requests of each kind (tests)")
    args = parser.parse_args()
    # model builds, JSON-schema requests, requests per latency median
    builds_n, schema_runs, median_runs = 3, 10, 10
    if args.smoke:
        args.tool_calls, builds_n, schema_runs, median_runs = 2, 1, 2, 2

    with tempfile.TemporaryDirectory(prefix="tiny-bench-") as tmp:
        work = Path(tmp)
        builds = []
        for attempt in range(builds_n):
            started = time.perf_counter()
            model_dir = build_tiny_model(work / f"model-{attempt}")
            builds.append(time.perf_counter() - started)

        server = VllmServer.start(model_dir, work, cpu_threads_bind=args.core)
        try:
            with httpx.Client(base_url=f"{server.base_url}/v1", timeout=60.0) as client:
                timed_ms(client, "/completions", {"prompt": "warm up", "max_tokens": 8})
                rss = server.rss_bytes()

                tool_valid, tool_ms = 0, []
                for index in range(args.tool_calls):
                    request = tool_request(index)
                    elapsed, body = timed_ms(client, "/chat/completions", request)
                    tool_ms.append(elapsed)
                    message = body["choices"][0]["message"]
                    tool_valid += not tool_call_problems(request, message)

                schema_valid = 0
                response_format = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "report",
                        "schema": Report.model_json_schema(),
                        "strict": True,
                    },
                }
                for index in range(schema_runs):
                    _, body = timed_ms(
                        client,
                        "/chat/completions",
                        {
                            "messages": [{"role": "user", "content": f"Report {index}."}],
                            "response_format": response_format,
                            "temperature": 0.0 if index % 2 else 1.0,
                            "seed": index,
                            "max_tokens": 256,
                        },
                    )
                    try:
                        Report.model_validate_json(body["choices"][0]["message"]["content"])
                        schema_valid += 1
                    except ValidationError:
                        pass

                one_token = median_ms(client, {"prompt": "ping", "max_tokens": 1}, median_runs)
                thirty_two = median_ms(
                    client,
                    {"prompt": "def f(", "max_tokens": 32, "ignore_eos": True, "temperature": 0},
                    median_runs,
                )
        finally:
            server.stop()

    print(
        json.dumps(
            {
                "build_s_median": round(statistics.median(builds), 2),
                "startup_to_health_s": round(server.startup_s, 1),
                "rss_mb_all_processes": round(rss / 2**20),
                "strict_tool_calls_valid": f"{tool_valid}/{args.tool_calls}",
                "tool_call_ms_median": round(statistics.median(tool_ms), 1),
                "json_schema_valid": f"{schema_valid}/{schema_runs}",
                "latency_1_token_ms_median": one_token,
                "latency_32_tokens_ms_median": thirty_two,
                "sigterm_to_all_exited_s": None
                if server.stop_s is None
                else round(server.stop_s, 1),
                "cpu_threads_bind": args.core,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
