"""[tools.mcp_endpoint]: agentd's governed tools served to outside MCP clients.

Off by default: it is one more listener, and only clients outside the daemon need it (replicas
call the tool gateway over NATS). Loopback only: the bearer tokens it takes travel in plain HTTP,
so a listener on another interface would hand them to the network. See agentd/tools/README.md,
"agentd as an MCP server".
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from agentd.config._section import _Section

__all__ = ["DEFAULT_MCP_LISTEN", "McpEndpointConfig", "split_listen"]

DEFAULT_MCP_LISTEN = "127.0.0.1:8765"


def split_listen(listen: str) -> tuple[str, int]:
    """`"127.0.0.1:8765"` -> ("127.0.0.1", 8765); `"[::1]:8765"` -> ("::1", 8765). Raises
    ValueError saying what is wrong: no port, a port out of range, a host not on loopback."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen {listen!r} must be HOST:PORT, e.g. {DEFAULT_MCP_LISTEN!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen {listen!r}: port {port} is not in 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"listen {listen!r}: the MCP endpoint listens on loopback only (127.0.0.1, "
                "::1 or localhost): bearer tokens travel in plain HTTP"
            )
    return host, port


class McpEndpointConfig(_Section):
    """[tools.mcp_endpoint]: streamable HTTP at http://<listen>/mcp, a bearer token per call.

    The tokens are the LLM gateway's: a replica's AGENTD_LLM_TOKEN, a registered agent's
    `llm_token`. Each call goes through the tool gateway as that agent.
    """

    enabled: bool = False
    listen: str = DEFAULT_MCP_LISTEN
    """HOST:PORT on loopback; port 0 picks a free one (logged, and in `agentctl status`)."""
    max_request_bytes: int = Field(1 << 20, ge=1024, le=16 << 20)
    """A request body over this is refused (413) before MCP parses it."""
    max_sessions: int = Field(1000, ge=1)
    """MCP sessions open at once; one more is refused (503) until one ends."""
    session_idle_s: float = Field(1800.0, gt=0)
    """A session with no request for this long is closed (its id then answers 404)."""
    call_timeout_s: float | None = Field(None, gt=0)
    """How long a tools/call waits for the gateway; None: [tools].approval_timeout_s plus the
    longest tool timeout plus 30 s (a call may park for approval, then run)."""

    @field_validator("listen")
    @classmethod
    def _loopback(cls, listen: str) -> str:
        split_listen(listen)
        return listen
