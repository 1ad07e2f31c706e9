"""What a refused reservation answers: 429 with Retry-After for a spent limit (it refills), 400
with `x-should-retry: false` for a call larger than the whole bucket (no wait helps), 503 when
the budgets' store cannot answer (fail closed: never let through unmetered)."""

from __future__ import annotations

import math

from agentd.errors import RateLimited
from agentd.gateway._budgets import BudgetUnavailable, Reservation, TokenBudgets
from agentd.gateway._records import Refusal

__all__ = ["reserve"]


async def reserve(budgets: TokenBudgets | None, agent: str, pool: str, tokens: int) -> Reservation:
    """Reserve `tokens` of (agent, pool)'s limit, or raise the `Refusal` the caller gets."""
    if budgets is None:
        return Reservation(None, agent, pool, tokens)
    try:
        return await budgets.reserve(agent, pool, tokens)
    except BudgetUnavailable as exc:
        refused = Refusal(
            503,
            "server_error",
            f"agent {agent}'s token budget on pool {pool} cannot be checked now "
            f"({exc}); the call is refused rather than let through unmetered",
            code="budget_unavailable",
            retry_after_s=1.0,
        )
        refused.headers["Retry-After"] = "1"
        raise refused from None
    except RateLimited as exc:
        if math.isinf(exc.retry_after_s):  # larger than the whole bucket: no wait helps
            refused = Refusal(
                400,
                "invalid_request_error",
                f"{exc}: the call may use {tokens} tokens, more than the limit ever "
                "allows at once, and no retry can succeed; lower max_tokens, n or the "
                "number of prompts",
                code="exceeds_limit",
                param="max_tokens",
                rule=exc.rule,
            )
            refused.headers["x-should-retry"] = "false"  # what OpenAI SDKs read
            raise refused from None
        refused = Refusal(
            429,
            "rate_limit_error",
            str(exc),
            code="rate_limited",
            rule=exc.rule,
            retry_after_s=exc.retry_after_s,
        )
        refused.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        raise refused from None
