"""Where a replica's graph keeps conversation state: SQLite on this host, or PostgreSQL.

SQLite (the default) is one file per agent under the state directory, shared by the agent's
replicas on this host. PostgreSQL (`[checkpoints] backend = "postgres"`) is one schema per agent
in a database every host reaches, so a conversation (LangGraph thread = conversation id)
continues on whichever host runs its next message. A replica told to use PostgreSQL that cannot
reach it fails to start: falling back to SQLite would silently fork a conversation's state.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agentd.config import CheckpointsConfig
from agentd.errors import AgentdError

__all__ = [
    "CheckpointSettings",
    "CheckpointStoreUnavailable",
    "application_name",
    "open_checkpointer",
    "postgres_schema",
]

CheckpointBackend = Literal["sqlite", "postgres"]

_IDENTIFIER_MAX = 63  # PostgreSQL truncates longer names silently


class CheckpointStoreUnavailable(AgentdError):
    """The configured checkpoint store cannot be used (unreachable, refused, no rights)."""


@dataclass(frozen=True, kw_only=True)
class CheckpointSettings:
    """A replica's checkpoint store, as the daemon tells it (environment variables)."""

    backend: CheckpointBackend = "sqlite"
    dsn: str | None = field(default=None, repr=False)  # holds a password: never in a repr
    pool_max_size: int = 4
    connect_timeout_s: float = 10.0

    @classmethod
    def from_config(
        cls, config: CheckpointsConfig, environ: Mapping[str, str]
    ) -> CheckpointSettings:
        """[checkpoints] with its connection string read from `environ` (`dsn_env`)."""
        return cls(
            backend=config.backend,
            dsn=config.dsn(environ),
            pool_max_size=config.pool_max_size,
            connect_timeout_s=config.connect_timeout_s,
        )

    def to_env(self) -> dict[str, str]:
        env: dict[str, str] = {"AGENTD_CHECKPOINT_BACKEND": self.backend}
        if self.backend == "postgres":
            env["AGENTD_CHECKPOINT_POOL_MAX_SIZE"] = str(self.pool_max_size)
            env["AGENTD_CHECKPOINT_CONNECT_TIMEOUT_S"] = str(self.connect_timeout_s)
            if self.dsn is not None:
                env["AGENTD_CHECKPOINT_DSN"] = self.dsn
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str], problems: list[str]) -> CheckpointSettings:
        """Read the variables `to_env` writes; what is wrong is appended to `problems`."""
        backend = env.get("AGENTD_CHECKPOINT_BACKEND") or "sqlite"
        if backend not in ("sqlite", "postgres"):
            problems.append(
                f"AGENTD_CHECKPOINT_BACKEND: must be sqlite or postgres (got {backend!r})"
            )
            return cls()
        if backend == "sqlite":
            return cls()
        dsn = env.get("AGENTD_CHECKPOINT_DSN") or None
        if dsn is None:
            problems.append(
                "AGENTD_CHECKPOINT_DSN: not set (AGENTD_CHECKPOINT_BACKEND is postgres and reads "
                "the PostgreSQL connection string from it)"
            )
        pool_max_size = 4
        raw_size = env.get("AGENTD_CHECKPOINT_POOL_MAX_SIZE", "4")
        try:
            pool_max_size = int(raw_size)
        except ValueError:
            problems.append(f"AGENTD_CHECKPOINT_POOL_MAX_SIZE: not an integer ({raw_size!r})")
        if pool_max_size < 1:
            problems.append("AGENTD_CHECKPOINT_POOL_MAX_SIZE: must be at least 1")
        connect_timeout_s = 10.0
        raw_timeout = env.get("AGENTD_CHECKPOINT_CONNECT_TIMEOUT_S", "10")
        try:
            connect_timeout_s = float(raw_timeout)
        except ValueError:
            problems.append(f"AGENTD_CHECKPOINT_CONNECT_TIMEOUT_S: not a number ({raw_timeout!r})")
        if connect_timeout_s <= 0:
            problems.append("AGENTD_CHECKPOINT_CONNECT_TIMEOUT_S: must be positive")
        return cls(
            backend="postgres",
            dsn=dsn,
            pool_max_size=pool_max_size,
            connect_timeout_s=connect_timeout_s,
        )


def postgres_schema(agent: str) -> str:
    """The schema holding `agent`'s checkpoints: as SQLite keeps a file per agent, so that two
    agents in one conversation (same thread id) never read each other's state."""
    schema = f"agentd_{agent}"
    if len(schema) <= _IDENTIFIER_MAX:
        return schema
    digest = hashlib.sha256(agent.encode()).hexdigest()[:12]
    return f"{schema[: _IDENTIFIER_MAX - 13]}_{digest}"


def application_name(agent: str) -> str:
    """The application_name of `agent`'s connections (pg_stat_activity shows it)."""
    return f"agentd checkpoints {agent}"[:_IDENTIFIER_MAX]


@contextlib.asynccontextmanager
async def open_checkpointer(
    settings: CheckpointSettings, *, agent: str, state_dir: Path | None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The checkpointer of `agent`'s graph, open for the life of the context.

    PostgreSQL: creates the agent's schema and LangGraph's tables if missing (idempotent, one
    replica at a time), then serves from a connection pool closed on exit. Raises
    CheckpointStoreUnavailable when the database cannot be reached or set up.
    """
    if settings.backend == "postgres":
        # imported here: psycopg and its pool cost a SQLite replica ~80 ms at start for nothing
        from agentd.worker._postgres_checkpoints import open_postgres

        async with open_postgres(settings, agent) as saver:
            yield saver
        return
    if state_dir is None:
        raise CheckpointStoreUnavailable(
            f"checkpoints (backend sqlite) of agent {agent!r}: the replica has no state "
            "directory (AGENTD_STATE_DIR)"
        )
    # a folder per agent: a sandboxed replica may write its own (SQLite adds -wal and -shm
    # files beside the database) and nothing of another agent's
    folder = state_dir / "checkpoints" / agent
    folder.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(folder / f"{agent}.sqlite")) as sqlite:
        yield sqlite
