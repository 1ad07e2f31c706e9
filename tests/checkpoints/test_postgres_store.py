"""open_checkpointer against a real PostgreSQL: setup is idempotent under concurrent replicas,
agents keep separate state under one thread id, errors name the backend and hide the password."""

from __future__ import annotations

import operator
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
import psycopg
import pytest
from langgraph.graph import END, START, StateGraph

from agentd.worker import (
    CheckpointSettings,
    CheckpointStoreUnavailable,
    open_checkpointer,
    postgres_schema,
)
from tests.checkpoints.postgres_server import PASSWORD, PostgresServer
from tests.harness import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Notes(TypedDict, total=False):
    notes: Annotated[list[str], operator.add]


def notes_graph() -> Any:
    builder = StateGraph(Notes)
    builder.add_node("keep", lambda state: {})
    builder.add_edge(START, "keep")
    builder.add_edge("keep", END)
    return builder


def settings(dsn: str, timeout_s: float = 5.0) -> CheckpointSettings:
    return CheckpointSettings(backend="postgres", dsn=dsn, connect_timeout_s=timeout_s)


async def schema_rows(postgres: PostgresServer, schema: str, query: str) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(postgres.admin_dsn) as conn:
        cursor = await conn.execute(query.replace("{schema}", f'"{schema}"'))
        return list(await cursor.fetchall())


async def test_replicas_starting_together_set_up_once(postgres: PostgresServer) -> None:
    """Six replicas of three agents open at once: every one starts, and each agent's schema
    holds LangGraph's migrations exactly once."""
    agents = [f"a{uuid.uuid4().hex[:6]}" for _ in range(3)]
    opened: list[str] = []

    async def replica(agent: str) -> None:
        async with open_checkpointer(settings(postgres.dsn()), agent=agent, state_dir=None):
            opened.append(agent)

    async with anyio.create_task_group() as tg:
        for agent in agents * 2:
            tg.start_soon(replica, agent)
    assert sorted(opened) == sorted(agents * 2)
    for agent in agents:
        versions = await schema_rows(
            postgres, postgres_schema(agent), "SELECT v FROM {schema}.checkpoint_migrations"
        )
        assert len(versions) == len({v for (v,) in versions}) > 0  # no migration twice


async def test_two_agents_in_one_conversation_keep_separate_state(
    postgres: PostgresServer,
) -> None:
    thread = {"configurable": {"thread_id": f"conv-{uuid.uuid4().hex[:8]}"}}
    one, two = f"one{uuid.uuid4().hex[:6]}", f"two{uuid.uuid4().hex[:6]}"
    async with open_checkpointer(settings(postgres.dsn()), agent=one, state_dir=None) as saver:
        graph = notes_graph().compile(checkpointer=saver)
        await graph.ainvoke({"notes": ["from one"]}, thread)
        assert await graph.ainvoke({"notes": ["again"]}, thread) == {"notes": ["from one", "again"]}
    async with open_checkpointer(settings(postgres.dsn()), agent=two, state_dir=None) as saver:
        graph = notes_graph().compile(checkpointer=saver)
        assert await graph.ainvoke({"notes": ["from two"]}, thread) == {"notes": ["from two"]}


def test_long_agent_names_get_distinct_schemas_postgres_keeps_whole() -> None:
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    schemas = {postgres_schema(long_a), postgres_schema(long_b), postgres_schema("tally")}
    assert postgres_schema("tally") == "agentd_tally"
    assert len(schemas) == 3 and all(len(s) <= 63 for s in schemas)


async def test_a_wrong_password_names_the_backend_and_hides_the_password(
    postgres: PostgresServer,
) -> None:
    wrong = "not-the-" + PASSWORD
    with pytest.raises(CheckpointStoreUnavailable) as caught:
        async with open_checkpointer(
            settings(postgres.dsn(password=wrong)), agent="tally", state_dir=None
        ):
            pytest.fail("opened with a wrong password")
    text = str(caught.value)
    assert "backend postgres" in text and "cannot connect" in text
    assert f"agentd@127.0.0.1:{postgres.port}/agentd" in text
    assert "password authentication failed" in text
    assert wrong not in text and PASSWORD not in text


async def test_an_unreachable_server_fails_within_the_connect_timeout() -> None:
    closed = free_port()
    started = anyio.current_time()
    with pytest.raises(CheckpointStoreUnavailable, match=f"127.0.0.1:{closed}/db"):
        dsn = f"postgresql://u:pw@127.0.0.1:{closed}/db"
        async with open_checkpointer(settings(dsn, 1.0), agent="tally", state_dir=None):
            pytest.fail("opened a server that is not there")
    assert anyio.current_time() - started < 5


async def test_an_unparsable_connection_string_is_not_echoed() -> None:
    secret = "hunter2-" + uuid.uuid4().hex[:6]
    with pytest.raises(CheckpointStoreUnavailable, match="not one PostgreSQL accepts") as caught:
        async with open_checkpointer(settings(f"{secret} oops"), agent="tally", state_dir=None):
            pytest.fail("opened an unparsable connection string")
    assert secret not in str(caught.value)


async def test_no_permission_to_create_the_schema_is_a_setup_error(
    postgres: PostgresServer,
) -> None:
    """A role that may log in but not create schemas: the error says setup failed, and where."""
    role = f"reader{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(postgres.admin_dsn, autocommit=True) as c:
        await c.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    dsn = f"postgresql://{role}:pw@127.0.0.1:{postgres.port}/postgres"
    with pytest.raises(CheckpointStoreUnavailable) as caught:
        async with open_checkpointer(settings(dsn), agent="tally", state_dir=None):
            pytest.fail("set up without the right to create a schema")
    text = str(caught.value)
    assert "cannot set up the checkpoint tables" in text and "permission denied" in text


async def test_sqlite_stays_the_single_host_default(tmp_path: Path) -> None:
    """The default backend: a file per agent under the state directory, state kept per thread."""
    thread = {"configurable": {"thread_id": "conv-1"}}
    for expected in (["one"], ["one", "two"]):
        async with open_checkpointer(
            CheckpointSettings(), agent="tally", state_dir=tmp_path
        ) as saver:
            graph = notes_graph().compile(checkpointer=saver)
            out = await graph.ainvoke({"notes": [expected[-1]]}, thread)
        assert out == {"notes": expected}
    assert (tmp_path / "checkpoints" / "tally" / "tally.sqlite").is_file()
    with pytest.raises(CheckpointStoreUnavailable, match="no state directory"):
        async with open_checkpointer(CheckpointSettings(), agent="tally", state_dir=None):
            pytest.fail("opened SQLite without a state directory")
