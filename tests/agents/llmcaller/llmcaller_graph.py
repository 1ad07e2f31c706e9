"""Answers each run with its gateway environment and the statuses of two gateway calls."""

from __future__ import annotations

import os
from typing import Any, TypedDict

import httpx
from langgraph.graph import END, START, StateGraph


class Seen(TypedDict, total=False):
    url: str
    token: str
    openai_matches: bool
    models: list[Any]
    chat: list[Any]


def build() -> Any:
    async def call(state: Seen) -> Seen:
        url, token = os.environ["AGENTD_LLM_URL"], os.environ["AGENTD_LLM_TOKEN"]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            models = await client.get("/models")
            chat = await client.post(
                "/chat/completions",
                json={"model": "main", "messages": [{"role": "user", "content": "hi"}]},
            )
        return {
            "url": url,
            "token": token,
            "openai_matches": os.environ.get("OPENAI_BASE_URL") == url
            and os.environ.get("OPENAI_API_KEY") == token,
            "models": [models.status_code, models.json()],
            "chat": [chat.status_code, chat.json()],
        }

    builder = StateGraph(Seen)
    builder.add_node("call", call)
    builder.add_edge(START, "call")
    builder.add_edge("call", END)
    return builder.compile()
