"""The replica's own OpenAI clients carry the run's trace to the LLM gateway, unasked.

Called by `python -m agentd.worker` after the secrets are in the environment and before the
graph module is imported: requests to `AGENTD_LLM_URL` (where `OPENAI_BASE_URL` points too)
get the current span's `traceparent` and a `baggage` naming the run and conversation in
progress (agentd/telemetry/_http_clients.py), so the gateway's `chat` span and `llm.call` record
sit under the run's `invoke_agent` span in `agentctl trace RUN` / `CONVERSATION`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from agentd.telemetry import instrument_http_clients
from agentd.worker._context import _current

__all__ = ["RUN_BAGGAGE_KEYS", "trace_llm_clients"]

log = logging.getLogger("agentd.worker")

# the baggage entries the LLM gateway reads (agentd/gateway/_caller_run.py)
RUN_BAGGAGE_KEYS = ("agentd.run_id", "agentd.conversation_id")


def _run_baggage() -> dict[str, str]:
    run = _current.get()
    if run is None:  # a call outside a run (the graph factory): a trace of its own
        return {}
    return {RUN_BAGGAGE_KEYS[0]: run.run_id, RUN_BAGGAGE_KEYS[1]: run.conversation_id}


def trace_llm_clients(environ: Mapping[str, str] | None = None) -> list[str]:
    """Instrument httpx/httpx2 for the gateway in `AGENTD_LLM_URL`; the libraries patched
    (none when the replica has no gateway)."""
    env = os.environ if environ is None else environ
    url = env.get("AGENTD_LLM_URL")
    if not url:
        return []
    try:
        return instrument_http_clients(url, baggage=_run_baggage)
    except ValueError as exc:  # the daemon wrote it: a bug, but not a reason to stop the agent
        log.warning("AGENTD_LLM_URL: %s; LLM calls will not carry the run's trace", exc)
        return []
