"""on_event: sync or async handlers, and handlers that fail."""

from __future__ import annotations

import anyio
import pytest

from agentd.supervisor import ChildEvent, ChildEventKind, ChildSpec, ChildState, Supervisor
from tests.supervisor.helpers import EventLog, child_argv, pid_alive

pytestmark = pytest.mark.anyio


async def test_async_handler_is_awaited_in_order(extra_pids: list[int], events: EventLog) -> None:
    seen: list[tuple[str, ChildState]] = []

    async def on_event(event: ChildEvent) -> None:
        await anyio.sleep(0.01)
        seen.append((event.kind, supervisor.info(event.name).state))
        events(event)

    supervisor = Supervisor(on_event=on_event)
    async with supervisor:
        await supervisor.start(ChildSpec(name="a", argv=child_argv()))
        info = supervisor.info("a")
    assert info.pid is not None and not pid_alive(info.pid)
    # Each event is delivered after the state it reports is in place.
    assert seen == [
        ("spawn", ChildState.STARTING),
        ("ready", ChildState.RUNNING),
        ("stop", ChildState.STOPPED),
    ]


async def test_failing_handler_does_not_hurt_supervision(
    extra_pids: list[int], events: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    def on_event(event: ChildEvent) -> None:
        events(event)
        raise RuntimeError("handler bug")

    async with Supervisor(on_event=on_event) as supervisor:
        info = await supervisor.start(ChildSpec(name="a", argv=child_argv()))
        assert supervisor.info("a").state is ChildState.RUNNING
        await supervisor.restart("a")
    assert info.pid is not None and not pid_alive(info.pid)
    assert events.kinds("a") == ["spawn", "ready", "stop", "restart", "spawn", "ready", "stop"]
    assert "on_event handler failed" in caplog.text
    assert events.of(ChildEventKind.RESTART)[0].reason == "operator restart"
