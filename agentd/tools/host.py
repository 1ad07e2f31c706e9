"""`python -m agentd.tools.host`: run one isolated tool call in this (child) process.

Reads `{"file", "attr", "tool", "args"}` as JSON on stdin, imports the tool's file, validates the
arguments again, calls the tool, and writes `{"ok": true, "result": ...}` or
`{"ok": false, "error": "...", "retryable": bool}` as JSON on stdout. Whatever the tool itself
prints goes to stderr, so it cannot corrupt the answer. The parent owns the timeout: it kills
this process's group.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from agentd.errors import ToolError
from agentd.tools._deadline import CallDeadline
from agentd.tools._host import as_json, invoke_in_process
from agentd.tools._registry import load_tool_file


def _call(request: dict[str, Any]) -> dict[str, Any]:
    specs = load_tool_file(Path(request["file"]))
    found = [s for s in specs if s.attr == request["attr"] and s.name == request["tool"]]
    if not found:
        raise ToolError(f"tool {request['tool']} is no longer in {request['file']}")
    spec = found[0]
    args = spec.validate(request["args"])
    # the tool sees its deadline here too, so it can stop itself before the parent kills it
    deadline = CallDeadline(request.get("timeout_s"))
    result = anyio.run(functools.partial(invoke_in_process, spec, args, deadline=deadline))
    return {"ok": True, "result": as_json(spec.name, result)}


def main() -> int:
    # the answer goes to the real stdout; anything printed (by Python or by a program the tool
    # starts) lands on stderr instead
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    name = "the tool"
    try:
        request = json.loads(sys.stdin.buffer.read())
        name = str(request.get("tool", name))
        answer = _call(request)
    except ToolError as exc:
        answer = {"ok": False, "error": str(exc), "retryable": exc.retryable}
    except Exception as exc:
        error = f"{name} failed: {type(exc).__name__}: {exc}"
        answer = {"ok": False, "error": error, "retryable": False}
    with os.fdopen(answer_fd, "wb") as out:
        out.write(json.dumps(answer).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
