"""The store's refund policy as an MCP server (stdio), written with the official `mcp` SDK.

agentd mounts it (`[tools.mcp.refunds]` in agentd.toml): its one tool becomes
`tool:refunds.refund_policy`, decided, limited and recorded like every other tool, and the
help-desk agent (agents/helpdesk) gets it as a LangChain tool from `ctx.tools()`.

    python mcp_servers/refunds/server.py          # speaks MCP on stdin/stdout

The policy is data, not code paths: a window per category, a share of the order's total that
may be refunded, and the categories that are never refunded once delivered.
"""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.fastmcp import FastMCP
from pydantic import Field

Category = Literal["electronics", "apparel", "books", "grocery"]

# category -> (return window in days, share of the total refundable, why)
POLICY: dict[str, tuple[int, float, str]] = {
    "electronics": (30, 1.0, "30 days, full refund"),
    "apparel": (60, 1.0, "60 days, full refund"),
    "books": (14, 0.5, "14 days, half the price (the book may have been read)"),
    "grocery": (0, 0.0, "perishable: never refunded once delivered"),
}

server = FastMCP("refunds", log_level="WARNING")  # stderr is the daemon's log


@server.tool()
def refund_policy(
    category: Category,
    days_since_delivery: Annotated[int, Field(ge=0, le=3650)],
    order_total: Annotated[float, Field(ge=0, le=1_000_000)],
) -> dict[str, object]:
    """The refund policy for one delivered order: whether it may be refunded and at most how
    much. Give the order's category, the days since it was delivered and its total."""
    window, share, why = POLICY[category]
    eligible = days_since_delivery <= window and share > 0
    return {
        "category": category,
        "eligible": eligible,
        "max_refund": round(order_total * share, 2) if eligible else 0.0,
        "window_days": window,
        "policy": why,
    }


if __name__ == "__main__":
    server.run()  # stdio
