"""[checkpoints]: where LangGraph keeps conversation state between runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentd.config._section import _Section

__all__ = ["CheckpointsConfig"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CheckpointsConfig(_Section):
    """[checkpoints]: the LangGraph checkpointer of agents whose spec sets `checkpoint = true`.

    `sqlite` (the default) keeps one file per agent under `<state_dir>/checkpoints`: enough on
    one host. `postgres` keeps them in PostgreSQL (a schema per agent), so a conversation
    continues on whichever host runs its agent next. Its connection string is read from the
    environment variable named by `dsn_env`, never from this file, so no password sits in it.
    """

    backend: Literal["sqlite", "postgres"] = "sqlite"
    dsn_env: str = "AGENTD_CHECKPOINT_DSN"
    """The environment variable holding the connection string (postgresql://user:pw@host/db)."""
    pool_max_size: int = Field(4, ge=1, le=64)
    """Connections per replica; the pool also replaces a connection the server dropped."""
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    """How long a replica tries to reach PostgreSQL at start before it fails."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_dsn(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dsn" in data:
            raise ValueError(
                "dsn: a connection string does not belong in agentd.toml (it holds a password): "
                "put it in an environment variable and name that variable with dsn_env"
            )
        return data

    @field_validator("dsn_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not _ENV_NAME.match(name):
            raise ValueError("must be an environment variable name (letters, digits and _)")
        return name

    def dsn(self, environ: Mapping[str, str]) -> str | None:
        """The PostgreSQL connection string from `environ` (None for sqlite or when unset)."""
        if self.backend != "postgres":
            return None
        return environ.get(self.dsn_env) or None

    def environment_problems(self, environ: Mapping[str, str]) -> list[str]:
        """What the environment lacks for this backend, as ConfigError lines (empty: ready)."""
        if self.backend == "postgres" and not self.dsn(environ):
            return [
                f"checkpoints.dsn_env: the environment variable {self.dsn_env} is not set "
                '(backend = "postgres" reads the PostgreSQL connection string from it); set it '
                "in agentd's environment, e.g. the systemd unit's EnvironmentFile, or use "
                'backend = "sqlite" on a single host'
            ]
        return []
