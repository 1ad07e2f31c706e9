"""The error hierarchy every part of agentd raises.

An error a user sees says what was wrong, where, and what to do. Each class here is caught by the
layer that can act on it: the CLI turns any `AgentdError` into a message and a non-zero exit, the
tool gateway turns `PolicyDenied` and `RateLimited` into structured replies a graph can handle.
"""

from __future__ import annotations

__all__ = [
    "AgentdError",
    "ApprovalTimeout",
    "BusUnavailable",
    "ConfigError",
    "ControlError",
    "InferenceUnavailable",
    "PolicyDenied",
    "RateLimited",
    "SpecError",
    "StateDirLocked",
    "ToolError",
    "WorkerCrashed",
]


class AgentdError(Exception):
    """Root of every error agentd raises on purpose."""


class ConfigError(AgentdError):
    """A configuration file is missing, unreadable or invalid.

    `problems` holds one line per bad field, each naming its TOML path.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


class SpecError(ConfigError):
    """An agent spec (agents/<name>/agent.toml) or its graph is invalid."""


class StateDirLocked(AgentdError):
    """Another agentd already runs on this state directory."""


class BusUnavailable(AgentdError):
    """NATS cannot be reached (or the embedded server did not start)."""


class ControlError(AgentdError):
    """A control-plane request failed; `code` is machine-readable."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        self.code = code
        self.details = details
        super().__init__(message)


class PolicyDenied(AgentdError):
    """Policy denied a request; `rule` names the rule that decided."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        self.rule = rule
        super().__init__(message)


class RateLimited(AgentdError):
    """A rate limit or budget is spent; retry after `retry_after_s` seconds. `rule` names the
    limit that refused (`limits.toml:LINE`) when one did."""

    def __init__(self, message: str, *, retry_after_s: float, rule: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        self.rule = rule
        super().__init__(message)


class ApprovalTimeout(AgentdError):
    """A call that needed human approval was not approved in time."""


class ToolError(AgentdError):
    """A tool failed; `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class InferenceUnavailable(AgentdError):
    """No model replica could serve the request."""


class WorkerCrashed(AgentdError):
    """A supervised child exited unexpectedly."""
