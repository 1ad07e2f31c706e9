"""An agent's catalog: the tools its spec lists, as a graph binds them to a model.

Served on `agentd.tools.<agent>` (request/reply). The subject's agent is the caller (NATS
accounts let a replica publish only under its own name), so an agent learns its own tools'
names, descriptions and JSON schemas and never another's. Tools its spec lists that the
registry lacks (an MCP server not answering yet) are named under `missing`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agentd.tools._registry import ToolRegistry

__all__ = ["catalog_reply"]


def catalog_reply(
    registry: ToolRegistry, allowed_tools: Callable[[str], list[str] | None], agent: str
) -> bytes:
    """The JSON answer to `agent`'s request for its catalog."""
    allowed = allowed_tools(agent)
    if allowed is None:
        error = {"code": "policy_denied", "message": f"no agent named {agent!r}"}
        return json.dumps({"ok": False, "error": error}).encode()
    tools: list[dict[str, Any]] = []
    missing: list[str] = []
    for name in allowed:
        spec = registry.get(name)
        if spec is None:
            missing.append(name)
            continue
        tools.append({"name": spec.name, "description": spec.description, "schema": spec.schema})
    return json.dumps({"ok": True, "tools": tools, "missing": missing}).encode()
