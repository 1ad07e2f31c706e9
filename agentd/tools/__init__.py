"""Tools: typed callables that only the tool gateway runs, on an agent's behalf, after policy.

`@tool("loan.approve")` declares one; `ToolRegistry.load(dir)` collects them; `ToolGateway`
serves `agentd.tool.<agent>.<tool>`: spec, schema, policy, idempotency, rate limit, approval,
run (`run_tool`: in the daemon or an isolated child process), record. See README.md here.

The gateway's parts (NATS, policy, telemetry) are imported on first use: an isolated tool's
process (`python -m agentd.tools.host`) needs only the registry and the host, and its start is
part of every isolated call's time.
"""

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from agentd.tools._deadline import CallDeadline, call_deadline
from agentd.tools._host import ToolSandbox, run_tool
from agentd.tools._registry import (
    InvalidArguments,
    ToolRegistry,
    ToolSpec,
    Trust,
    load_tool_file,
    tool,
)

if TYPE_CHECKING:
    from agentd.tools._approvals import ApprovalBook, ApprovalOutcome, PendingApproval
    from agentd.tools._gateway import ToolGateway
    from agentd.tools._mcp_endpoint import McpEndpoint
    from agentd.tools._mcp_mount import McpMount, mcp_connector
    from agentd.tools._mcp_schema import McpToolSpec, SchemaProblem, strict_schema
    from agentd.tools._protocol import ErrorCode, ToolCallRequest, ToolRefusal
    from agentd.tools._results import CallRecord, ResultStore
    from agentd.tools._taint import Taint, TaintBook

__all__ = [
    # declaring and loading tools
    "InvalidArguments",
    "ToolRegistry",
    "ToolSpec",
    "Trust",
    "load_tool_file",
    "tool",
    # inside a call: its deadline
    "CallDeadline",
    "call_deadline",
    # the gateway
    "ErrorCode",
    "ToolCallRequest",
    "ToolGateway",
    "ToolRefusal",
    # agentd as an MCP server for outside clients ([tools.mcp_endpoint])
    "McpEndpoint",
    # its parts
    "ApprovalBook",
    "ApprovalOutcome",
    "CallRecord",
    "PendingApproval",
    "ResultStore",
    "run_tool",
    "ToolSandbox",
    # MCP servers' tools as registry entries (README.md, "MCP servers")
    "McpMount",
    "McpToolSpec",
    "SchemaProblem",
    "MCP_LAUNCHER",
    "mcp_connector",
    "strict_schema",
    # taint: which runs received untrusted content
    "Taint",
    "TaintBook",
]

_LAZY = {
    "ApprovalBook": "_approvals",
    "ApprovalOutcome": "_approvals",
    "PendingApproval": "_approvals",
    "ToolGateway": "_gateway",
    "McpEndpoint": "_mcp_endpoint",
    "ErrorCode": "_protocol",
    "ToolCallRequest": "_protocol",
    "ToolRefusal": "_protocol",
    "CallRecord": "_results",
    "ResultStore": "_results",
    "Taint": "_taint",
    "McpMount": "_mcp_mount",
    "mcp_connector": "_mcp_mount",
    "McpToolSpec": "_mcp_schema",
    "SchemaProblem": "_mcp_schema",
    "strict_schema": "_mcp_schema",
    "TaintBook": "_taint",
}


MCP_LAUNCHER = str(Path(__file__).with_name("_mcp_launch.py"))
"""The script a stdio MCP server is started through (standard library only: run it with
`python -I -S`)."""


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"agentd.tools.{module}"), name)
