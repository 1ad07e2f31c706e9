"""A stand-in for a vLLM server, for fast tests of the pool manager's paths (a real-vLLM test of
each path exists in test_pools_vllm.py).

Started like the CUDA package's ``vllm serve MODEL --port P ...`` (unknown options are ignored).
It prints a few loading lines, waits $FAKE_VLLM_STARTUP_S, then serves /health,
/v1/completions and /metrics; the gauges on /metrics come from the JSON file
$FAKE_VLLM_METRICS (``{"running": 0, "waiting": 0, "kv": 0.0}``), read at each request. With
$FAKE_VLLM_ENGINE set it starts a child process first, as vLLM starts its engine core.
Completions run like a model that never stops: every sequence (each prompt x n) runs to
max_tokens (vLLM's default 16), one choice each, and the usage says so.

/v1/chat/completions (non-streaming) answers "x", or from the JSON list of assistant messages
in $FAKE_VLLM_CHAT_SCRIPT (read at each request): entry i answers a chat with i tool results
after its last user message (a scripted ReAct loop: call a tool, read its result, call the next,
answer); a tool call without a "name" calls the tool the request's tool_choice names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web


def _gauges() -> dict[str, float]:
    path = os.environ.get("FAKE_VLLM_METRICS")
    if not path or not Path(path).exists():
        return {"running": 0.0, "waiting": 0.0, "kv": 0.0}
    data: dict[str, float] = json.loads(Path(path).read_text())
    return data


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def completions(request: web.Request) -> web.Response:
    body = await request.json()
    served = request.app["served_name"]
    if body.get("model") != served:
        return web.json_response({"error": f"model {body.get('model')!r} not found"}, status=404)
    prompt = body.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and not isinstance(prompt[0], int) else 1
    sequences = prompts * int(body.get("n") or 1)
    max_tokens = int(body.get("max_tokens") or 16)
    choices = [{"index": i, "text": "x", "finish_reason": "length"} for i in range(sequences)]
    generated = sequences * max_tokens
    usage = {"prompt_tokens": prompts, "completion_tokens": generated}
    usage["total_tokens"] = prompts + generated
    return web.json_response(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": served,
            "choices": choices,
            "usage": usage,
        }
    )


def _scripted_message(body: dict[str, Any]) -> dict[str, object]:
    path = os.environ.get("FAKE_VLLM_CHAT_SCRIPT")
    script = json.loads(Path(path).read_text()) if path else []
    messages: list[dict[str, object]] = body.get("messages") or []
    choice = body.get("tool_choice")
    named = choice["function"]["name"] if isinstance(choice, dict) else None
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    step = sum(1 for m in messages[users[-1] if users else 0 :] if m.get("role") == "tool")
    if step >= len(script):
        return {"role": "assistant", "content": "x"}
    message: dict[str, object] = {"role": "assistant", "content": "", **script[step]}
    calls = message.get("tool_calls")
    if isinstance(calls, list):  # OpenAI's shape, with ids like vLLM's
        message["tool_calls"] = [
            {
                "id": f"chatcmpl-tool-{step}-{n}",
                "type": "function",
                "function": {"name": c.get("name", named), "arguments": json.dumps(c["args"])},
            }
            for n, c in enumerate(calls)
        ]
    return message


async def chat(request: web.Request) -> web.Response:
    body = await request.json()
    served = request.app["served_name"]
    if body.get("model") != served:
        return web.json_response({"error": f"model {body.get('model')!r} not found"}, status=404)
    if body.get("stream"):
        return web.json_response({"error": "fake_vllm does not stream chats"}, status=400)
    message = _scripted_message(body)
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return web.json_response(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": served,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    )


async def metrics(request: web.Request) -> web.Response:
    g = _gauges()
    label = f'{{model_name="{request.app["served_name"]}",engine="0"}}'
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{label} {g['running']}\n"
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{label} {g['waiting']}\n"
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{label} {g['kv']}\n"
    )
    return web.Response(text=text, content_type="text/plain")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _unknown = parser.parse_known_args()
    print(f"INFO loading weights of {args.model}", flush=True)
    if os.environ.get("FAKE_VLLM_ENGINE"):
        # Like vLLM's engine core: a child process in the server's process group.
        engine = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(600)"
        )
        print(f"INFO engine core pid {engine.pid}", flush=True)
    await asyncio.sleep(float(os.environ.get("FAKE_VLLM_STARTUP_S", "0")))
    app = web.Application()
    app["served_name"] = args.served_model_name
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"INFO serving {args.served_model_name} on port {args.port}", flush=True)
    print(f"INFO argv {json.dumps(sys.argv[1:])}", flush=True)
    print(f"INFO env CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
