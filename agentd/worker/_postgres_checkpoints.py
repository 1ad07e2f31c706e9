"""The PostgreSQL checkpoint store: one schema per agent, LangGraph's tables set up by one
replica at a time, then a connection pool for the life of the replica."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agentd.worker._checkpoints import (
    CheckpointSettings,
    CheckpointStoreUnavailable,
    application_name,
    postgres_schema,
)

__all__ = ["open_postgres"]

# One key for every agentd: replicas starting together run LangGraph's migrations one at a time
# (its setup() inserts each migration's version, and two at once collide on that key).
_SETUP_LOCK_KEY = 0x616765_6E7464  # "agentd"
_SETUP_TIMEOUT_S = 60.0  # migrations take well under a second; a stuck peer's lock ends with it


@contextlib.asynccontextmanager
async def open_postgres(
    settings: CheckpointSettings, agent: str
) -> AsyncIterator[AsyncPostgresSaver]:
    """`agent`'s PostgreSQL checkpointer: schema and tables set up, then a pool (see
    `open_checkpointer`)."""
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
