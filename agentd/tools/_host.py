"""The tool host: runs one validated call with a timeout, in the daemon or in a child process.

- async tools are awaited under `anyio.fail_after`;
- sync tools run in a worker thread. A Python thread cannot be killed: on timeout the caller
  gets its error at once and the call's deadline is cancelled (`CallDeadline`: the tool's
  `on_cancel` hooks run, e.g. SQLite's `interrupt`), but a tool that ignores its deadline runs
  on until the function returns (and its side effect may still happen). A call abandoned before
  its thread started never starts. Tools that can hang or must be stoppable ask for isolation;
- `isolated=True` tools run in a child process (`python -m agentd.tools.host`) in a process group
  of their own, which is SIGKILLed on timeout or cancellation, with whatever it started. Given a
  `ToolSandbox`, the child starts under the sandbox's exec wrapper (agentd.sandbox): Landlock,
  no-new-privs and limits, in its scratch folder (docs/sandbox.md, "Isolated tools").

`on_finished` is called once the call's work has really ended: when a thread tool's function
returns (perhaps after the timeout), when an isolated call's process is gone, when an async tool
is done; the gateway's running-call bounds are released by it.

Timeouts and exceptions become `ToolError` (timeouts are `retryable`; a tool may raise
`ToolError(..., retryable=True)` itself to say so). Results must be JSON.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import ByteReceiveStream
from pydantic import BaseModel, JsonValue
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentd.errors import ToolError
from agentd.sandbox import ENV_PLAN, SandboxPlan, wrapper_argv
from agentd.supervisor import signal_group
from agentd.tools._deadline import CallDeadline, running_until
from agentd.tools._registry import ToolSpec

__all__ = ["ToolSandbox", "invoke_in_process", "run_tool"]

log = logging.getLogger("agentd.tools")

# what an isolated child may write on stdout (the result) and stderr (kept for errors)
MAX_OUTPUT_BYTES = 16 << 20
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class ToolSandbox:
    """How an isolated tool's process is confined: `plan` (built by the daemon from [sandbox]
    and the tool's declarations), and `scratch`, its own folder (cwd, $TMPDIR)."""

    plan: SandboxPlan
    scratch: Path


async def run_tool(
    spec: ToolSpec,
    args: BaseModel,
    *,
    timeout_s: float,
    isolated: bool | None = None,
    on_finished: Callable[[], object] | None = None,
    sandbox: ToolSandbox | None = None,
) -> JsonValue:
    """Run `spec` with validated `args` within `timeout_s` (in a child process when `isolated`,
    default: as the tool declares, under `sandbox` when given); the JSON result or
    `ToolError`."""
    finish = _Finish(on_finished)
    # an MCP tool runs in its server, already a process of its own: it is never "isolated"
    if spec.kind != "mcp" and (spec.isolated if isolated is None else isolated):
        try:
            return await _run_isolated(spec, args, timeout_s, sandbox)
        finally:
            finish.now()
    deadline = CallDeadline(timeout_s)
    try:
        with anyio.fail_after(timeout_s):
            result = await invoke_in_process(spec, args, deadline=deadline, finish=finish)
    except TimeoutError:
        deadline.cancel()
        raise ToolError(
            f"{spec.name} timed out after {timeout_s:g}s (its deadline was cancelled)",
            retryable=True,
        ) from None
    except Exception as exc:
        if deadline.expired():  # the tool stopped itself at its deadline
            raise ToolError(
                f"{spec.name} timed out after {timeout_s:g}s and stopped: {exc}", retryable=True
            ) from None
        if isinstance(exc, ToolError):
            raise
        raise ToolError(f"{spec.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        deadline.cancel()  # whatever the tool left registered must not outlive the call
        finish.abandoned()
    return as_json(spec.name, result)


async def invoke_in_process(
    spec: ToolSpec,
    args: BaseModel,
    *,
    deadline: CallDeadline | None = None,
    finish: _Finish | None = None,
) -> Any:
    """Call the tool here and return what it returns (no timeout, no conversion), with
    `deadline` as the call's (`call_deadline()`)."""
    deadline = deadline or CallDeadline()
    if spec.kind == "langchain":
        with running_until(deadline):
            return await spec.target.ainvoke(args.model_dump())
    if spec.kind == "mcp":  # the target calls the server's session (agentd.tools._mcp_mount)
        with running_until(deadline):
            return await spec.target(args.model_dump(mode="json"))
    kwargs = {name: getattr(args, name) for name in type(args).model_fields}
    if spec.is_async:
        with running_until(deadline):
            return await spec.target(**kwargs)
    call = functools.partial(spec.target, **kwargs)
    finish = finish or _Finish(None)

    def in_thread() -> Any:
        if not finish.start():
            raise ToolError(f"{spec.name} was abandoned before it started")
        try:
            with running_until(deadline):
                return call()
        finally:
            finish.now()

    return await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)


class _Finish:
    """Calls `on_finished` once, when the work has ended: the thread's own end, or at once for
    a thread abandoned before it started (which then never starts)."""

    def __init__(self, on_finished: Callable[[], object] | None) -> None:
        self._on_finished = on_finished
        self._state: Literal["pending", "running", "done"] = "pending"
        self._lock = threading.Lock()

    def start(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "running"
            return True

    def abandoned(self) -> None:
        """The caller stops waiting: finished now unless a thread still runs the work."""
        with self._lock:
            if self._state == "running":
                return
        self.now()

    def now(self) -> None:
        with self._lock:
            if self._state == "done":
                return
            self._state = "done"
        if self._on_finished is not None:
            self._on_finished()


def as_json(name: str, result: Any) -> JsonValue:
    """`result` as JSON values, or `ToolError` when it cannot be one."""
    try:
        value: JsonValue = to_jsonable_python(result)
        json.dumps(value, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise ToolError(f"{name} returned something that is not JSON: {exc}") from None
    return value


async def _run_isolated(
    spec: ToolSpec, args: BaseModel, timeout_s: float, sandbox: ToolSandbox | None
) -> JsonValue:
    request = {
        "file": str(spec.file),
        "attr": spec.attr,
        "tool": spec.name,
        "args": args.model_dump(mode="json"),
        "timeout_s": timeout_s,
    }
    env = dict(os.environ)
    # the child imports agentd from wherever this process did
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    argv, cwd = [sys.executable, "-m", "agentd.tools.host"], None
    if sandbox is not None:
        argv, cwd = wrapper_argv(argv), sandbox.scratch
        env |= {
            ENV_PLAN: sandbox.plan.to_json(),
            "TMPDIR": str(sandbox.scratch),
            "AGENTD_SCRATCH_DIR": str(sandbox.scratch),
        }
    out, err = bytearray(), bytearray()
    process = await anyio.open_process(argv, env=env, cwd=cwd, start_new_session=True)
    finished = False
    try:
        assert process.stdin and process.stdout and process.stderr
        with anyio.fail_after(timeout_s):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_collect, process.stdout, out)
                tg.start_soon(_collect, process.stderr, err)
                with contextlib.suppress(anyio.BrokenResourceError):
                    await process.stdin.send(json.dumps(request).encode())
                await process.stdin.aclose()
            code = await process.wait()
        finished = True
    except TimeoutError:
        raise ToolError(
            f"{spec.name} timed out after {timeout_s:g}s (its process was killed)", retryable=True
        ) from None
    finally:
        if not finished:  # timed out or cancelled: nothing it started may outlive the call
            signal_group(process.pid, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await process.aclose()
    return _answer(spec.name, code, bytes(out), bytes(err))


async def _collect(stream: ByteReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        if len(into) + len(chunk) > MAX_OUTPUT_BYTES:
            raise ToolError(f"the tool wrote more than {MAX_OUTPUT_BYTES} bytes")
        into.extend(chunk)


def _answer(name: str, code: int, out: bytes, err: bytes) -> JsonValue:
    if b"agentd.sandbox: WARNING" in err:  # mode warn: it ran without its sandbox
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("agentd.sandbox: WARNING"):
                log.warning("tool %s: %s", name, line)
    tail = err.decode(errors="replace").strip()[-800:]
    try:
        answer = json.loads(out)
    except ValueError:
        detail = f": {tail}" if tail else ""
        raise ToolError(f"{name}'s process exited with code {code} and no result{detail}") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ToolError(f"{name}'s process answered something else than a result")
    if not answer["ok"]:
        raise ToolError(str(answer.get("error")), retryable=bool(answer.get("retryable")))
    result: JsonValue = answer.get("result")
    return result
