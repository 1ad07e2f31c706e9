"""The LLM gateway: agents' OpenAI-compatible door to the model pools.

Bearer token -> holder (a replica, a registered agent, an outside token) and its policy subject,
policy (subject, model:<pool>, infer), limits.toml's token limits per subject and pool (buckets in
the daemon's KV store), prefix-affinity routing under a load bound, retry before the first byte,
one `llm.call` decision record per call. See docs/architecture.md and agentd/gateway/README.md.
"""

from __future__ import annotations

from agentd.gateway._budgets import (
    BucketState,
    BucketStore,
    BudgetUnavailable,
    MemoryBucketStore,
    Reservation,
    TokenBudgets,
)
from agentd.gateway._gateway import LLMGateway, PolicyAnswer, PolicyCheck
from agentd.gateway._kv_budgets import KvBucketStore, open_budget_store
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
    # token budgets: limits.toml model limits, buckets in a store (the daemon's: KV)
    "BucketState",
    "BucketStore",
    "BudgetUnavailable",
    "KvBucketStore",
    "MemoryBucketStore",
    "Reservation",
    "TokenBudgets",
    "open_budget_store",
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
