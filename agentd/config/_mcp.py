"""[tools.mcp.<server>]: an MCP server whose tools the gateway offers as `<server>.<tool>`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agentd.config._section import _Section

__all__ = ["McpServerConfig"]

# a server name is the first tokens of its tools' names (`refunds` -> `refunds.issue`)
MCP_SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class McpServerConfig(_Section):
    """One MCP server: stdio (`command`, `args`, `env`; started, sandboxed and restarted by the
    daemon) or streamable HTTP (`url`, and `headers_env` = {Header = "ENV_VAR"}: header values
    are read from the daemon's environment, so no secret is written in agentd.toml).

    `trust` (default "untrusted": what an MCP server returns came from outside, and taints the
    run that receives it; agentd/tools/README.md, "Taint"), `timeout_s` (its calls' timeout,
    else [tools].call_timeout_s). A stdio server's sandbox: `read`, `write` and
    `connect_ports` as `[tools.overrides]` has them; `cwd` (default: agentd.toml's folder).
    """

    command: str | None = None
    """`python` (or `python3`) is the daemon's own interpreter."""
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: Path | None = None
    url: str | None = None
    headers_env: dict[str, str] = {}
    trust: Literal["trusted", "untrusted"] = "untrusted"
    timeout_s: float | None = Field(None, gt=0)
    start_timeout_s: float = Field(20.0, gt=0)
    """How long the daemon waits at start for the server's tools before serving without them
    (they appear once it answers)."""
    read: list[str] = []
    write: list[str] = []
    connect_ports: list[Annotated[int, Field(ge=1, le=65535)]] = []

    @field_validator("headers_env")
    @classmethod
    def _env_names(cls, headers: dict[str, str]) -> dict[str, str]:
        for header, var in headers.items():
            if not _ENV_NAME.match(var):
                raise ValueError(
                    f"headers_env.{header} = {var!r} must name an environment variable (the "
                    "header's value is read from it: secrets never go in agentd.toml)"
                )
        return headers

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                "set either command (a stdio server the daemon starts) or url (a streamable "
                "HTTP server), not both and not neither"
            )
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url {self.url!r} must start with http:// or https://")
            stdio_only = [
                k for k in ("args", "env", "read", "write", "connect_ports") if getattr(self, k)
            ]
            if stdio_only or self.cwd is not None:
                raise ValueError(f"{', '.join(stdio_only) or 'cwd'}: only for a stdio server")
        elif self.headers_env:
            raise ValueError("headers_env: only for an HTTP server (url)")
        elif not self.command:
            raise ValueError("command must not be empty")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"
