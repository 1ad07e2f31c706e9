"""The tiny model served by real vLLM (CPU build): strict tool calls, JSON schema, liveness.

Starts one server for the module, pinned to one core, from the vLLM environment named by
$AGENTD_VLLM_PYTHON (default /work/.venv-vllm/bin/python; `deploy/vllm-cpu/setup.sh` makes it).
Startup takes 30-60 s on a CPU, hence the module's larger timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inference.tool_schemas import (
    PROMPTS,
    TOOLS,
    Report,
    tool_call_problems,
    tool_request,
)
from tests.inference.vllm_server import VllmServer, group_members, vllm_python

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not vllm_python().exists(),
        reason=f"no vLLM environment at {vllm_python()} (set AGENTD_VLLM_PYTHON or run "
        "deploy/vllm-cpu/setup.sh)",
    ),
]

MODEL = "tiny"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    running = VllmServer.start(tiny_model_dir, tmp_path_factory.mktemp("vllm"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: VllmServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.base_url}/v1", timeout=60.0) as http:
        yield http


def chat(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/chat/completions", json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()["choices"][0]["message"]
    return message


def test_strict_tool_calls_match_their_schemas(client: httpx.Client) -> None:
    problems = []
    for index in range(len(PROMPTS)):
        request = tool_request(index)
        problems += tool_call_problems(request, chat(client, **request))
    assert problems == []


def test_tool_call_history_renders_and_continues(server: VllmServer, client: httpx.Client) -> None:
    arguments = {"city": "Paris", "days": 2, "unit": "celsius", "tags": []}
    messages = [
        {"role": "system", "content": "You are a weather assistant."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(arguments)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 14}'},
    ]
    rendered = client.post(
        f"{server.base_url}/tokenize",
        json={"model": MODEL, "messages": messages, "tools": TOOLS, "add_generation_prompt": True},
    )
    assert rendered.status_code == 200, rendered.text
    detokenized = client.post(
        f"{server.base_url}/detokenize", json={"model": MODEL, "tokens": rendered.json()["tokens"]}
    )
    prompt = detokenized.json()["prompt"]
    assert '<tools>\n{"name": "get_weather"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"' in prompt
    assert '<tool_response>\n{"temp_c": 14}\n</tool_response><|im_end|>\n' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    request = {"messages": messages, "tools": TOOLS, "tool_choice": "required", "max_tokens": 256}
    assert tool_call_problems(request, chat(client, **request)) == []


def test_json_schema_response_format(client: httpx.Client) -> None:
    for temperature in (0.0, 1.0):
        message = chat(
            client,
            messages=[{"role": "user", "content": "Summarise the incident as a report."}],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "report",
                    "schema": Report.model_json_schema(),
                    "strict": True,
                },
            },
            temperature=temperature,
            max_tokens=256,
        )
        Report.model_validate_json(message["content"])


def test_one_token_completion_answers_within_seconds(client: httpx.Client) -> None:
    # The liveness probe: /health stays 200 on a hung engine, a real completion does not.
    started = time.monotonic()
    response = client.post(
        "/completions", json={"model": MODEL, "prompt": "ping", "max_tokens": 1}, timeout=5.0
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 1
    assert elapsed < 3.0


def test_32_token_completion_latency(client: httpx.Client) -> None:
    timings = []
    for attempt in range(5):
        started = time.monotonic()
        response = client.post(
            "/completions",
            json={
                "model": MODEL,
                "prompt": f"def handler_{attempt}(",
                "max_tokens": 32,
                "ignore_eos": True,
                "temperature": 0.0,
            },
        )
        timings.append(time.monotonic() - started)
        assert response.json()["usage"]["completion_tokens"] == 32
    assert sorted(timings)[len(timings) // 2] < 1.0


def test_sigterm_stops_every_process(server: VllmServer) -> None:
    # Runs last in this module: it stops the shared server.
    pgid = server.process.pid
    assert len(group_members(pgid)) >= 2  # API server and engine core at least
    server.stop()
    assert server.stop_s is not None, "needed SIGKILL:\n" + server.log_tail()
    assert server.process.returncode is not None
    assert group_members(pgid) == []
