"""The daemon's configuration: frozen, validated models, one section per service.

Durations end in `_s`, sizes in `_bytes`. Every model forbids unknown keys so a typo in
agentd.toml is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AgentsConfig",
    "AutoscaleConfig",
    "BusConfig",
    "Config",
    "DaemonConfig",
    "EmbeddedNatsConfig",
    "GatewayConfig",
    "InboxConfig",
    "PolicyConfig",
    "ToolsConfig",
    "TraceConfig",
]

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DaemonConfig(_Section):
    """[daemon]: process-wide settings."""

    state_dir: Path = Path(".agentd")
    drain_grace_s: float = Field(10.0, gt=0, le=3600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["human", "json"] = "human"


class EmbeddedNatsConfig(_Section):
    """[bus.embedded]: the nats-server agentd starts when [bus].url is unset."""

    host: str = "127.0.0.1"
    port: int = Field(4222, ge=1, le=65535)
    binary: Path | None = None
    store_dir: Path | None = None
    ready_timeout_s: float = Field(15.0, gt=0)
    sync_always: bool = False

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError(
                "the embedded nats-server listens on loopback only; "
                "set [bus].url to use a NATS server reachable from other hosts"
            )
        return host


class BusConfig(_Section):
    """[bus]: how agentd reaches NATS."""

    url: str | None = None
    prefix: str = "agentd"
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(5.0, gt=0)
    embedded: EmbeddedNatsConfig = EmbeddedNatsConfig()

    @field_validator("url")
    @classmethod
    def _nats_url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        for part in url.split(","):
            if not part.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{part.strip()!r} is not a NATS URL (nats://host:port)")
        return url

    @field_validator("prefix")
    @classmethod
    def _subject_prefix(cls, prefix: str) -> str:
        if not _PREFIX.match(prefix):
            raise ValueError(
                "must be NATS subject tokens (letters, digits, _ and -, dot-separated)"
            )
        return prefix


class InboxConfig(_Section):
    """[inbox]: the JetStream stream that holds every agent's inbox."""

    max_deliver: int = Field(5, ge=1, le=1000)
    ack_wait_s: float = Field(30.0, gt=0)
    duplicate_window_s: float = Field(120.0, gt=0)
    max_age_s: float = Field(7 * 24 * 3600.0, gt=0)


class AgentsConfig(_Section):
    """[agents]: where agent specs live and which run."""

    dir: Path = Path("agents")
    enabled: list[str] | None = None
    heartbeat_s: float = Field(1.0, gt=0, le=60)
    ready_timeout_s: float = Field(60.0, gt=0)
    max_spawned: int = Field(32, ge=0, le=1024)


class AutoscaleConfig(_Section):
    """[autoscale]: scaling agents between their min and max replicas on their backlog."""

    enabled: bool = True
    interval_s: float = Field(2.0, gt=0)
    cooldown_s: float = Field(10.0, ge=0)
    scale_up_at: float = Field(1.0, gt=0)
    scale_down_at: float = Field(0.3, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> AutoscaleConfig:
        if self.scale_down_at >= self.scale_up_at:
            raise ValueError("scale_down_at must be below scale_up_at (hysteresis)")
        return self


class TraceConfig(_Section):
    """[trace]: the durable, hash-chained decision log under the state directory."""

    log_file: str = "decisions.db"
    signing_key_file: str = "decision-log.key"
    checkpoint_every: int = Field(default=1000, ge=1)
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    redact_patterns: tuple[str, ...] = ()
    max_inline_bytes: int = Field(default=16384, ge=64)
    retention_max_age_s: float | None = Field(default=None, gt=0)
    retention_max_records: int | None = Field(default=None, ge=1)

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact pattern {pattern!r} is not a regex: {exc}") from exc
            if compiled.search(""):
                raise ValueError(f"redact pattern {pattern!r} matches the empty string")
        return patterns


class PolicyConfig(_Section):
    """[policy]: the Casbin decision point every enforcement point asks."""

    mode: Literal["enforce", "off"] = "enforce"
    dir: Path = Path("policies")


class ToolsConfig(_Section):
    """[tools]: the tool gateway and the tools it runs for agents."""

    dir: Path = Path("tools")
    call_timeout_s: float = Field(30.0, gt=0)
    approval_timeout_s: float = Field(300.0, gt=0)
    approval_ttl_s: float = Field(600.0, gt=0)
    results_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)


class GatewayConfig(_Section):
    """[gateway]: the OpenAI-compatible LLM gateway agents reach their model pools through.

    `port` 0 (the default) takes a free port: the daemon's own replicas are told the URL; set a
    fixed port for clients outside the daemon. Token budgets apply per agent and pool:
    `budget_tokens` per `budget_window_s` (refilled continuously), `budgets` overrides it for
    "agent/pool" keys; None means no budget.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    default_max_tokens: int = Field(512, ge=1)
    budget_tokens: int | None = Field(None, ge=1)
    budget_window_s: float = Field(60.0, gt=0)
    budgets: dict[str, int] = {}
    load_factor: float = Field(1.25, ge=1.0, le=10.0)
    max_attempts: int = Field(3, ge=1, le=10)
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(600.0, gt=0)
    max_request_bytes: int = Field(16 * 2**20, ge=1024)

    @field_validator("budgets")
    @classmethod
    def _budget_keys(cls, budgets: dict[str, int]) -> dict[str, int]:
        for key, tokens in budgets.items():
            if key.count("/") != 1 or not all(key.split("/")):
                raise ValueError(f"budget key {key!r} must be 'agent/pool'")
            if tokens < 1:
                raise ValueError(f"budget {key!r} must be at least 1 token")
        return budgets


class Config(_Section):
    """The whole of agentd.toml. `source` is the file it came from (not a TOML key)."""

    daemon: DaemonConfig = DaemonConfig()
    bus: BusConfig = BusConfig()
    inbox: InboxConfig = InboxConfig()
    agents: AgentsConfig = AgentsConfig()
    autoscale: AutoscaleConfig = AutoscaleConfig()
    trace: TraceConfig = TraceConfig()
    policy: PolicyConfig = PolicyConfig()
    tools: ToolsConfig = ToolsConfig()
    gateway: GatewayConfig = GatewayConfig()
