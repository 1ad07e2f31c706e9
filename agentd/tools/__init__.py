"""Tools: typed callables that only the tool gateway runs, on an agent's behalf, after policy.

`@tool("loan.approve")` declares one; `ToolRegistry.load(dir)` collects them; `ToolGateway`
serves `agentd.tool.<agent>.<tool>`: spec, schema, policy, idempotency, rate limit, approval,
run (`run_tool`: in the daemon or an isolated child process), record. See README.md here.
"""

from agentd.tools._approvals import ApprovalBook, ApprovalOutcome, PendingApproval
from agentd.tools._gateway import ToolGateway
from agentd.tools._host import run_tool
from agentd.tools._protocol import ErrorCode, ToolCallRequest, ToolRefusal
from agentd.tools._registry import (
    InvalidArguments,
    ToolRegistry,
    ToolSpec,
    load_tool_file,
    tool,
)
from agentd.tools._results import CallRecord, ResultStore

__all__ = [
    # declaring and loading tools
    "InvalidArguments",
    "ToolRegistry",
    "ToolSpec",
    "load_tool_file",
    "tool",
    # the gateway
    "ErrorCode",
    "ToolCallRequest",
    "ToolGateway",
    "ToolRefusal",
    # its parts
    "ApprovalBook",
    "ApprovalOutcome",
    "CallRecord",
    "PendingApproval",
    "ResultStore",
    "run_tool",
]
