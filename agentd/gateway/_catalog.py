"""The model list an agent sees (GET /v1/models and /v1/models/{model}): one entry per pool
its policy lets it use, named by the pool; `root` is the model the pool serves."""

from __future__ import annotations

from typing import Any

from agentd.gateway._policy import PolicyCheck
from agentd.gateway._upstreams import Upstreams

__all__ = ["model_entry", "visible_pools"]


def visible_pools(
    upstreams: Upstreams,
    policy: PolicyCheck | None,
    subject: str,
    scope: tuple[str, ...] | None = None,
) -> list[str]:
    """The pools policy subject `subject` may infer on (every pool without a policy), within
    an outside token's `scope` when it has one."""
    return [
        pool
        for pool in upstreams.pool_names()
        if (scope is None or pool in scope)
        and (policy is None or policy(subject, f"model:{pool}", "infer").allowed)
    ]


def model_entry(upstreams: Upstreams, pool: str) -> dict[str, Any]:
    """A pool as an OpenAI model object (plus how many replicas are ready)."""
    return {
        "id": pool,
        "object": "model",
        "created": 0,
        "owned_by": "agentd",
        "root": upstreams.model_id(pool),
        "ready_replicas": len(upstreams.endpoints(pool)),
    }
