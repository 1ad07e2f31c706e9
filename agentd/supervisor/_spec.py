"""What the supervisor is told (specs, policies) and what it tells back (snapshots, events)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

__all__ = [
    "ChildEvent",
    "ChildEventKind",
    "ChildInfo",
    "ChildSpec",
    "ChildState",
    "LivenessProbe",
    "Probe",
    "RestartPolicy",
    "RestartType",
]


class RestartType(StrEnum):
    """When a child that ended on its own is started again (the OTP restart types)."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit: a non-zero code, a signal, a failed probe."""
    TEMPORARY = "temporary"
    """Never restarted."""


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """How and how often a child is restarted.

    More than `max_restarts` restarts within `window_s` seconds marks the child FAILED (restart
    intensity). Restart n waits `backoff_initial_s * 2**(n-1)`, capped at `backoff_max_s`, plus or
    minus `jitter` of that; the count n goes back to 1 once the child has stayed up `window_s`.
    """

    type: RestartType = RestartType.PERMANENT
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        problems = []
        if self.max_restarts < 0:
            problems.append(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.window_s <= 0:
            problems.append(f"window_s must be > 0, got {self.window_s}")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            problems.append(
                "need 0 <= backoff_initial_s <= backoff_max_s, got "
                f"{self.backoff_initial_s} and {self.backoff_max_s}"
            )
        if not 0 <= self.jitter < 1:
            problems.append(f"jitter must be in [0, 1), got {self.jitter}")
        if problems:
            raise ValueError("invalid RestartPolicy: " + "; ".join(problems))


Probe = Callable[["ChildInfo"], Awaitable[None]]
"""A ready probe: returns once the child is ready, raises if it cannot become ready."""

LivenessProbe = Callable[["ChildInfo"], Awaitable[bool]]
"""A liveness probe: False, an exception or a timeout counts as one failure."""


@dataclass(frozen=True, kw_only=True)
class ChildSpec:
    """One OS process to supervise: how to start it, probe it, stop it and keep its output.

    `env` is merged over the supervisor's own environment. Stopping sends SIGTERM to the child's
    process group and SIGKILL after `stop_grace_s`. With `log_path`, stdout and stderr go to that
    file, rotated at `log_max_bytes` into `log_backups` numbered backups.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | Path | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_s: float = 10.0
    ready: Probe | None = None
    ready_timeout_s: float = 30.0
    liveness: LivenessProbe | None = None
    liveness_interval_s: float = 1.0
    liveness_timeout_s: float = 2.0
    liveness_failures: int = 3
    log_path: Path | None = None
    stdin_data: bytes | None = field(default=None, repr=False)
    """What the child reads on its stdin, then end of file (else /dev/null): how a secret
    reaches it without an environment other processes can read or a file."""
    log_max_bytes: int = 10_000_000
    log_backups: int = 3

    def __post_init__(self) -> None:
        # A tuple, so that a caller mutating its list later cannot change a running spec.
        object.__setattr__(self, "argv", tuple(self.argv))
        problems = []
        if not self.name:
            problems.append("name must not be empty")
        if not self.argv:
            problems.append("argv must name a program")
        for attr in ("stop_grace_s", "ready_timeout_s", "liveness_timeout_s"):
            if getattr(self, attr) < 0:
                problems.append(f"{attr} must be >= 0, got {getattr(self, attr)}")
        if self.liveness_interval_s <= 0:
            problems.append(f"liveness_interval_s must be > 0, got {self.liveness_interval_s}")
        if self.liveness_failures < 1:
            problems.append(f"liveness_failures must be >= 1, got {self.liveness_failures}")
        if self.log_max_bytes < 1 or self.log_backups < 0:
            problems.append("log_max_bytes must be >= 1 and log_backups >= 0")
        if problems:
            raise ValueError(f"invalid ChildSpec {self.name!r}: " + "; ".join(problems))


class ChildState(StrEnum):
    """Where a child is in its life."""

    STARTING = "starting"
    """Spawned, waiting for its ready probe."""
    RUNNING = "running"
    """Ready; liveness probes run."""
    BACKOFF = "backoff"
    """Ended, waiting out the backoff before a restart."""
    STOPPING = "stopping"
    """SIGTERM sent, waiting for the grace period."""
    STOPPED = "stopped"
    """Stopped on request (stop() or shutdown)."""
    EXITED = "exited"
    """Ended and, by its restart type, not restarted."""
    FAILED = "failed"
    """Restart intensity exceeded; given up on until an operator restarts it."""


class ChildEventKind(StrEnum):
    """What happened to a child. Every process end is exactly one `exit` or one `stop`."""

    SPAWN = "spawn"
    READY = "ready"
    EXIT = "exit"
    RESTART = "restart"
    FAILED = "failed"
    UNHEALTHY = "unhealthy"
    STOP = "stop"


@dataclass(frozen=True)
class ChildInfo:
    """A snapshot of one child. `started_at` is wall-clock time of the current process's spawn."""

    name: str
    state: ChildState
    pid: int | None
    started_at: float | None
    restarts: int
    last_exit_code: int | None
    last_signal: int | None
    last_error: str | None
    last_line: str | None
    spec: ChildSpec


@dataclass(frozen=True)
class ChildEvent:
    """A lifecycle event. `at` is wall-clock time; `exit_code`/`signal` are set on exit and stop."""

    kind: ChildEventKind
    name: str
    pid: int | None
    at: float
    exit_code: int | None
    signal: int | None
    reason: str
    restarts: int
