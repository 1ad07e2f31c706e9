"""A fake OpenAI-compatible model server (aiohttp), for the gateway's fast tests.

Each replica answers like vLLM (usage, finish reasons, SSE chunks ending in a usage chunk and
[DONE]) and can be told to fail: `reset` drops the connection before answering, `busy`
answers 503, `reject` answers 400 (as vLLM does for a prompt too long), `cut` streams two
chunks and then drops the connection. Every body it receives is kept, so tests can check what
the gateway sent. With `generate_max` it answers like a model that never stops: every sequence
(each prompt x max(n, best_of)) runs to max_tokens, and the usage says so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Mode = Literal["ok", "reset", "busy", "cut", "reject"]


@dataclass
class FakeReplica:
    name: str
    mode: Mode = "ok"
    received: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    generate_max: bool = False

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        if self.mode == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if self.mode == "reject":
            error = {"message": "prompt too long", "type": "BadRequestError", "code": 400}
            return web.json_response({"error": error}, status=400)
        if self.mode == "busy":
            return web.json_response({"error": "engine dead"}, status=503)
        if self.generate_max and not body.get("stream"):
            return web.json_response(_ran_to_max(body))
        words = ["hello", " from", f" {self.name}"]
        usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 14}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, word in enumerate(words):
            finish = "length" if index == len(words) - 1 else None
            chunk = {
                "id": "cmpl-1",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": finish}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.mode == "cut" and index == 1:
                assert request.transport is not None
                request.transport.close()
                return response
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {"id": "cmpl-1", "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(final)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _ran_to_max(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt", [])
    prompts = len(prompt) if isinstance(prompt, list) and not isinstance(prompt[0], int) else 1
    sequences = prompts * max(body.get("n") or 1, body.get("best_of") or 1)
    max_tokens = body.get("max_completion_tokens") or body["max_tokens"]
    choices = [
        {"index": i, "text": "x" * max_tokens, "finish_reason": "length"} for i in range(sequences)
    ]
    usage = {"prompt_tokens": prompts, "completion_tokens": sequences * max_tokens}
    return {"id": "cmpl-max", "object": "text_completion", "choices": choices, "usage": usage}


@asynccontextmanager
async def fake_replicas(*replicas: FakeReplica) -> AsyncIterator[list[FakeReplica]]:
    """Serve each replica on its own loopback port for the duration of the block."""
    runners = []
    try:
        for replica in replicas:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", replica._answer)
            app.router.add_post("/v1/completions", replica._answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            replica.base_url = f"http://{host}:{port}"
        yield list(replicas)
    finally:
        for runner in runners:
            await runner.cleanup()
