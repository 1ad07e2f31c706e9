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

import anyio
import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agentd.config import CheckpointsConfig
from agentd.errors import AgentdError

__all__ = [
    "CheckpointSettings",
    "application_name",
    "CheckpointStoreUnavailable",
    "open_checkpointer",
    "postgres_schema",
]

CheckpointBackend = Literal["sqlite", "postgres"]

# One key for every agentd: replicas starting together run LangGraph's migrations one at a time
# (its setup() inserts each migration's version, and two at once collide on that key).
_SETUP_LOCK_KEY = 0x616765_6E7464  # "agentd"
_SETUP_TIMEOUT_S = 60.0  # migrations take well under a second; a stuck peer's lock ends with it
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
        async with _postgres(settings, agent) as saver:
            yield saver
        return
    if state_dir is None:
        raise CheckpointStoreUnavailable(
            f"checkpoints (backend sqlite) of agent {agent!r}: the replica has no state "
            "directory (AGENTD_STATE_DIR)"
        )
    folder = state_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(folder / f"{agent}.sqlite")) as sqlite:
        yield sqlite


@contextlib.asynccontextmanager
async def _postgres(settings: CheckpointSettings, agent: str) -> AsyncIterator[AsyncPostgresSaver]:
    dsn = settings.dsn
    if not dsn:
        raise CheckpointStoreUnavailable(
            f"checkpoints (backend postgres) of agent {agent!r}: no connection string "
            "(AGENTD_CHECKPOINT_DSN is empty)"
        )
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's complaint quotes the string, which may hold the password: not repeated here
        raise CheckpointStoreUnavailable(
            f"checkpoints (backend postgres) of agent {agent!r}: the connection string in "
            "[checkpoints].dsn_env's variable is not one PostgreSQL accepts; write it as "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    where = _describe(parts)
    schema = postgres_schema(agent)
    # what AsyncPostgresSaver needs of its connections (its from_conn_string's settings), and a
    # name that shows in pg_stat_activity unless the connection string gives one
    options: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    if not parts.get("application_name"):
        options["application_name"] = application_name(agent)
    try:
        with anyio.fail_after(settings.connect_timeout_s * 2):
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=max(1, round(settings.connect_timeout_s)), **options
            )
    except (psycopg.Error, TimeoutError, OSError) as exc:
        raise _unavailable(agent, where, dsn, "cannot connect to", exc) from None
    try:
        async with conn:
            with anyio.fail_after(_SETUP_TIMEOUT_S):
                await _set_up(conn, schema)
    except (psycopg.Error, TimeoutError) as exc:
        raise _unavailable(
            agent, where, dsn, "cannot set up the checkpoint tables in", exc
        ) from None

    async def use_schema(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))

    pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=settings.pool_max_size,
        kwargs=options,
        configure=use_schema,
        # a connection the server dropped (restart, failover) is replaced, not handed out
        check=AsyncConnectionPool.check_connection,
        timeout=settings.connect_timeout_s,
        name=f"agentd-checkpoints-{agent}",
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout_s)
    except (PoolTimeout, psycopg.Error) as exc:
        with anyio.CancelScope(shield=True):
            await pool.close()
        raise _unavailable(agent, where, dsn, "cannot open a connection pool to", exc) from None
    try:
        yield AsyncPostgresSaver(pool)
    finally:
        with anyio.CancelScope(shield=True):
            await pool.close()


async def _set_up(conn: psycopg.AsyncConnection[DictRow], schema: str) -> None:
    """Create the agent's schema and run LangGraph's migrations, under a lock across hosts.

    The lock is taken with pg_try_advisory_lock in a loop, not pg_advisory_lock: a replica
    blocked inside that statement holds an open transaction, and the holder's CREATE INDEX
    CONCURRENTLY (a LangGraph migration) waits for every open transaction: a deadlock.
    """
    delay = 0.02
    # a session lock, released when the connection closes even if the setup fails; its holder
    # is another process, so there is no event to wait for: poll, backing off
    while True:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_SETUP_LOCK_KEY,))
        row = await cursor.fetchone()
        if row is not None and row["got"]:
            break
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.5)
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    await AsyncPostgresSaver(conn).setup()


def _describe(parts: Mapping[str, Any]) -> str:
    """user@host:port/dbname of a parsed connection string, without its password."""
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{host}:{port}/{parts.get('dbname') or '(default database)'}"


def _unavailable(
    agent: str, where: str, dsn: str, what: str, exc: BaseException
) -> CheckpointStoreUnavailable:
    detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    password = conninfo_to_dict(dsn).get("password")
    if password:
        detail = detail.replace(str(password), "***")
    return CheckpointStoreUnavailable(
        f"checkpoints (backend postgres) of agent {agent!r}: {what} PostgreSQL at {where} "
        f"({detail}); check the connection string in [checkpoints].dsn_env's variable and that "
        "the server is up. The replica does not fall back to SQLite, whose state other hosts "
        "cannot see"
    )
