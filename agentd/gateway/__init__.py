"""The LLM gateway: agents' OpenAI-compatible door to the model pools.

Bearer token -> holder (a replica, a registered agent, an outside token), policy (its subject,
model:<pool>, infer), token budgets per agent and pool,
prefix-affinity routing under a load bound, retry before the first byte, one `llm.call` decision
record per call. See docs/architecture.md and agentd/gateway/README.md.
"""

from __future__ import annotations

from agentd.gateway._budgets import BudgetBook, Reservation, TokenLimits
from agentd.gateway._gateway import LLMGateway, PolicyAnswer, PolicyCheck
from agentd.gateway._outside_tokens import OutsideToken, parse_ttl
from agentd.gateway._protocol import MalformedRequest, parse_call
from agentd.gateway._routing import AffinityRouter, ReplicaChooser, RoundRobin
from agentd.gateway._token_bucket import TokenBucket
from agentd.gateway._tokens import HolderKind, TokenBook, TokenHolder
from agentd.gateway._upstreams import ReplicaEndpoint, StaticUpstreams, Upstreams

__all__ = [
    # the HTTP service
    "LLMGateway",
    "PolicyAnswer",
    "PolicyCheck",
    # who calls
    "HolderKind",
    "TokenBook",
    "TokenHolder",
    # outside tokens (agentctl tokens): kept as digests in a key-value bucket
    "OutsideToken",
    "TokenBucket",
    "parse_ttl",
    # budgets
    "BudgetBook",
    "Reservation",
    "TokenLimits",
    # where calls go
    "AffinityRouter",
    "ReplicaChooser",
    "ReplicaEndpoint",
    "RoundRobin",
    "StaticUpstreams",
    "Upstreams",
    # the wire format
    "MalformedRequest",
    "parse_call",
]
