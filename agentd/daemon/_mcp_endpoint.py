"""The daemon's MCP endpoint ([tools.mcp_endpoint]): who a bearer token is, from the books the
LLM gateway and the identity service keep, so a replica or a registered agent is one policy
subject at every door (NATS, the LLM gateway, the tool gateway, MCP)."""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client

from agentd.bus import Subjects
from agentd.config import Config
from agentd.daemon._identity import DaemonIdentity
from agentd.gateway import LLMGateway
from agentd.tools import ToolRegistry
from agentd.tools._mcp_endpoint import McpEndpoint
from agentd.tools._mcp_guard import McpCaller

__all__ = ["build_mcp_endpoint", "token_caller"]


def token_caller(
    llm: LLMGateway | None, identity: DaemonIdentity | None
) -> Callable[[str], McpCaller | None]:
    """A token's holder: the LLM gateway's book (replicas' tokens and, through
    `IdentityTokens`, registered agents'), else the identity service's book alone."""

    def caller(token: str) -> McpCaller | None:
        if llm is not None:
            holder = llm.tokens.holder(token)
            if holder is None or holder.kind == "outside":  # outside tokens: models only
                return None
            return McpCaller(holder.agent, holder.replica)
        if identity is not None:
            agent = identity.tokens.agent_for(token)
            return McpCaller(agent, f"{agent}@identity") if agent else None
        return None  # the config refuses an endpoint with neither (no token is ever issued)

    return caller


def build_mcp_endpoint(
    config: Config,
    nc: Client,
    subjects: Subjects,
    *,
    registry: ToolRegistry,
    allowed_tools: Callable[[str], list[str] | None],
    llm: LLMGateway | None,
    identity: DaemonIdentity | None,
    record: Callable[..., None],
) -> McpEndpoint:
    return McpEndpoint(
        nc,
        subjects,
        config=config.tools.mcp_endpoint,
        tools=config.tools,
        registry=registry,
        allowed_tools=allowed_tools,
        authenticate=token_caller(llm, identity),
        record=record,
    )
