"""Fixtures: an anyio backend (plain asyncio and uvloop), a running supervisor, a leak check."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest

from agentd.supervisor import Supervisor
from tests.supervisor.helpers import EventLog, pid_alive


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    backend: tuple[str, dict[str, object]] = request.param
    return backend


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def extra_pids(events: EventLog) -> Iterator[list[int]]:
    """Pids a test wants checked for leaks on top of every pid the supervisor spawned."""
    pids: list[int] = []
    yield pids
    leftovers = sorted(p for p in events.spawned_pids() | set(pids) if pid_alive(p))
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
async def supervisor(events: EventLog, extra_pids: list[int]) -> AsyncIterator[Supervisor]:
    async with Supervisor(on_event=events) as running:
        yield running
