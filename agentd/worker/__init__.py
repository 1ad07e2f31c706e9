"""The agent worker: one replica process serving one agent's inbox.

Never imports supervisor, policy, tools or daemon (import rules): a worker knows only the bus and
config; tool calls are requests to the gateway (`AgentContext.call_tool`).
"""

from typing import TYPE_CHECKING

from agentd.worker._checkpoints import (
    CheckpointSettings,
    CheckpointStoreUnavailable,
    application_name,
    open_checkpointer,
    postgres_schema,
)
from agentd.worker._context import AgentContext, RunInfo, SendFailed, ToolCallFailed
from agentd.worker._graph import Runnable, load_graph
from agentd.worker._local_tools import (
    GATEWAY_MARK,
    ToolCallOutsideRun,
    ToolCallRefused,
)
from agentd.worker._local_tools import install as govern_local_tools
from agentd.worker._local_tools import settle as settle_local_tools
from agentd.worker._settings import SECRETS_ENV, WorkerSettings, take_secrets
from agentd.worker._worker import AgentWorker

if TYPE_CHECKING:
    from agentd.worker._gateway_tools import GATEWAY_METADATA, GatewayTool, gateway_tools

__all__ = [
    "AgentContext",
    "AgentWorker",
    "GATEWAY_METADATA",
    "GatewayTool",
    "gateway_tools",
    "CheckpointSettings",
    "CheckpointStoreUnavailable",
    "GATEWAY_MARK",
    "ToolCallOutsideRun",
    "ToolCallRefused",
    "govern_local_tools",
    "settle_local_tools",
    "RunInfo",
    "Runnable",
    "SendFailed",
    "ToolCallFailed",
    "WorkerSettings",
    "SECRETS_ENV",
    "take_secrets",
    "application_name",
    "load_graph",
    "open_checkpointer",
    "postgres_schema",
]


def __getattr__(name: str) -> object:
    # LangChain's tools are imported on first use: the daemon imports this package for the
    # worker's settings and needs none of them
    if name in ("GATEWAY_METADATA", "GatewayTool", "gateway_tools"):
        from agentd.worker import _gateway_tools

        return getattr(_gateway_tools, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
