"""A retried or redelivered run goes on from its last checkpoint instead of starting over.

Every run's config names its message in the checkpoint metadata (`agentd_message_id`, which
LangGraph copies from `config["metadata"]` into each checkpoint it writes). When a message may
have run before (a retry in place, or a redelivery the run ledger has not seen finish), the
worker reads the thread's latest checkpoint:

- written by this message's run: the run goes on with `ainvoke(None, config)`, LangGraph's
  resume. Finished nodes are not run again, pending writes of a half-done step are kept, and the
  input is not fed a second time, so the thread holds the user's message once. A node that was
  cut short runs again with the state it had: a model's AIMessage is in that state, so a tool
  node repeats the model's tool call ids, and the tool gateway answers a call id it has already
  run (message id + call id) with the stored result instead of a second side effect. When the
  graph had finished but the ledger had not recorded it (the replica died in between),
  `ainvoke(None)` runs nothing and returns the finished output.
- anything else (another message's, or none): the run starts from its input.

Runs use LangGraph's `durability="sync"`: each step's checkpoint is stored before the next step
starts, so the checkpoint a resume finds holds every step that finished, the model's tool calls
included (with "async", the default, a replica killed during a tool call could lose the model
step's checkpoint, and the rerun model step would call the tool again under new call ids).

A graph without a checkpointer (`checkpoint = false`) has nothing to resume from: its retries
start over (tool calls are still answered from the gateway's stored results by call id).
"""

from __future__ import annotations

import logging
from typing import Any

from agentd.bus import Message
from agentd.worker._graph import Runnable
from agentd.worker._io_shapes import GraphInput, graph_input

__all__ = ["MESSAGE_KEY", "invoke_run", "run_config", "run_message"]

log = logging.getLogger("agentd.worker")

MESSAGE_KEY = "agentd_message_id"
"""The checkpoint metadata key naming the inbox message whose run wrote the checkpoint."""


def run_config(conversation_id: str, message_id: str) -> dict[str, Any]:
    """The RunnableConfig of one run: the conversation is the LangGraph thread."""
    return {
        "configurable": {"thread_id": conversation_id},
        "metadata": {MESSAGE_KEY: message_id},
    }


async def resumable(graph: Runnable, config: dict[str, Any], message_id: str) -> bool:
    """Whether the thread's latest checkpoint was written by `message_id`'s run."""
    if not _has_checkpointer(graph):
        return False
    thread = {"configurable": {"thread_id": config["configurable"]["thread_id"]}}
    snapshot = await graph.aget_state(thread)  # type: ignore[attr-defined]
    metadata = getattr(snapshot, "metadata", None) or {}
    return bool(metadata.get(MESSAGE_KEY) == message_id)


async def invoke_run(
    graph: Runnable, payload: Any, config: dict[str, Any], *, message_id: str, may_have_run: bool
) -> tuple[Any, bool]:
    """Run the graph for one message: from its input, or, when `may_have_run` and the thread's
    latest checkpoint is this message's, from that checkpoint. Returns (output, resumed).

    `payload` is already shaped for the graph (agentd.worker._io_shapes.graph_input)."""
    # a step's checkpoint is stored before the next step starts (LangGraph's default, "async",
    # stores it while the next step runs): else a replica killed during a tool call may find
    # only an earlier checkpoint, rerun the model step, and call the tool under new call ids
    options = {"durability": "sync"} if _has_checkpointer(graph) else {}
    if may_have_run and await resumable(graph, config, message_id):
        log.info("message %s: resuming its run from the thread's last checkpoint", message_id)
        return await graph.ainvoke(None, config, **options), True
    return await graph.ainvoke(payload, config, **options), False


def _has_checkpointer(graph: object) -> bool:
    try:
        from langgraph.checkpoint.base import BaseCheckpointSaver
    except ImportError:  # pragma: no cover - langgraph is a dependency
        return False
    saver = getattr(graph, "checkpointer", None)
    return isinstance(saver, BaseCheckpointSaver) and hasattr(graph, "aget_state")


async def run_message(
    graph: Runnable, shape: GraphInput, message: Message, *, agent: str, may_have_run: bool
) -> tuple[Any, bool]:
    """One message's run: its payload shaped for the graph (raising InputShapeError when it
    cannot fit), then `invoke_run`. Returns (output, resumed)."""
    payload = graph_input(message.payload, shape, agent=agent)
    config = run_config(message.conversation_id, message.id)
    return await invoke_run(
        graph, payload, config, message_id=message.id, may_have_run=may_have_run
    )
