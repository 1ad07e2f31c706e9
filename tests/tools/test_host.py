"""The tool host: in-process (async, or a thread for sync tools) and isolated child processes,
with timeouts and errors turned into ToolError."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentd.errors import ToolError
from agentd.tools import ToolRegistry, ToolSpec, run_tool

from .support import wait_dead

pytestmark = pytest.mark.anyio

TOOLS = """
import asyncio, os, threading, time
from agentd.errors import ToolError
from agentd.tools import tool

@tool("where.sync")
def where_sync() -> dict:
    return {"pid": os.getpid(), "thread": threading.get_ident()}

@tool("where.async")
async def where_async() -> dict:
    return {"pid": os.getpid(), "thread": threading.get_ident()}

@tool("slow.async")
async def slow_async(seconds: float) -> None:
    await asyncio.sleep(seconds)

@tool("slow.sync")
def slow_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "done"

@tool("fail.retryable")
def fail_retryable() -> None:
    raise ToolError("the bank is busy", retryable=True)

@tool("fail.plain", isolated=True)
async def fail_plain() -> None:
    raise KeyError("account")

@tool("bad.result")
def bad_result() -> object:
    return object()

@tool("where.isolated", isolated=True)
async def where_isolated() -> dict:
    print("chatter")
    return {"pid": os.getpid()}

@tool("exit.isolated", isolated=True)
def exit_isolated() -> None:
    os._exit(3)
"""


@pytest.fixture
def tools(tmp_path: Path) -> ToolRegistry:
    directory = tmp_path / "tools"
    directory.mkdir()
    (directory / "host_tools.py").write_text(TOOLS)
    return ToolRegistry.load(directory)


def _spec(tools: ToolRegistry, name: str) -> ToolSpec:
    spec = tools.get(name)
    assert spec is not None
    return spec


async def _run(tools: ToolRegistry, name: str, timeout_s: float = 10, **args: object) -> Any:
    spec = _spec(tools, name)
    return await run_tool(spec, spec.validate(args), timeout_s=timeout_s)


async def test_where_tools_run(tools: ToolRegistry) -> None:
    sync = await _run(tools, "where.sync")
    asynchronous = await _run(tools, "where.async")
    isolated = await _run(tools, "where.isolated")
    assert sync["pid"] == os.getpid()
    assert sync["thread"] != threading.get_ident()  # a worker thread
    assert asynchronous == {"pid": os.getpid(), "thread": threading.get_ident()}
    assert isolated["pid"] != os.getpid()  # a child process


async def test_timeouts_are_retryable_tool_errors(tools: ToolRegistry) -> None:
    with pytest.raises(ToolError, match=r"slow.async timed out after 0.2s") as caught:
        await _run(tools, "slow.async", timeout_s=0.2, seconds=30)
    assert caught.value.retryable
    started = time.monotonic()
    # a thread cannot be killed: the caller gets its error on time, the thread finishes later
    with pytest.raises(ToolError, match="timed out") as thread_timeout:
        await _run(tools, "slow.sync", timeout_s=0.2, seconds=0.6)
    assert time.monotonic() - started < 0.5
    assert thread_timeout.value.retryable


async def test_exceptions_become_tool_errors(tools: ToolRegistry) -> None:
    with pytest.raises(ToolError, match="the bank is busy") as retryable:
        await _run(tools, "fail.retryable")
    assert retryable.value.retryable
    with pytest.raises(ToolError, match="fail.plain failed: KeyError: 'account'") as plain:
        await _run(tools, "fail.plain")
    assert not plain.value.retryable
    with pytest.raises(ToolError, match="not JSON"):
        await _run(tools, "bad.result")
    with pytest.raises(ToolError, match="exited with code 3 and no result"):
        await _run(tools, "exit.isolated")


async def test_an_isolated_tool_is_killed_with_its_children_on_timeout(tmp_path: Path) -> None:
    directory = tmp_path / "tools"
    directory.mkdir()
    pids = tmp_path / "pids"
    (directory / "hang.py").write_text(
        "import os, subprocess, time\n"
        "from pathlib import Path\n"
        "from agentd.tools import tool\n\n"
        '@tool("proc.hang", isolated=True)\n'
        "def hang(pid_file: str) -> None:\n"
        '    child = subprocess.Popen(["sleep", "60"])\n'
        '    Path(pid_file).write_text(f"{os.getpid()} {child.pid}")\n'
        "    time.sleep(60)\n"
    )
    spec = _spec(ToolRegistry.load(directory), "proc.hang")
    started = time.monotonic()
    with pytest.raises(ToolError, match="its process was killed") as caught:
        await run_tool(spec, spec.validate({"pid_file": str(pids)}), timeout_s=1.5)
    assert caught.value.retryable
    assert time.monotonic() - started < 3
    tool_pid, sleeper_pid = (int(p) for p in pids.read_text().split())
    assert tool_pid != os.getpid()
    assert wait_dead(tool_pid, sleeper_pid)
