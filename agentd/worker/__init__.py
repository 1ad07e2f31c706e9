"""The agent worker: one replica process serving one agent's inbox.

Never imports supervisor, policy or daemon (STYLE.md): a worker knows only the bus and config.
"""

from agentd.worker._context import AgentContext, RunInfo, SendFailed
from agentd.worker._graph import Runnable, load_graph
from agentd.worker._settings import WorkerSettings
from agentd.worker._worker import AgentWorker

__all__ = [
    "AgentContext",
    "AgentWorker",
    "RunInfo",
    "Runnable",
    "SendFailed",
    "WorkerSettings",
    "load_graph",
]
