"""The log writer signs a checkpoint by time (`checkpoint_interval_s`) when records came since
the newest one, never while an anchored log waits for its check; the daemon-level test is
tests/audit/test_timed_checkpoints.py."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agentd.trace import DecisionLog, LogWriter

from .conftest import LogFactory, make_record

pytestmark = [pytest.mark.anyio]


async def covered(writer: LogWriter, size: int, within_s: float = 10.0) -> None:
    """Wait until a checkpoint covers `size` records (a timed one wakes `next_commit` too)."""
    log = writer.log
    with anyio.fail_after(within_s):
        while log.last_checkpoint is None or log.last_checkpoint.tree_size < size:
            await writer.next_commit()


async def test_few_records_are_signed_after_the_interval_and_again_after_more(
    open_log: LogFactory,
) -> None:
    log = open_log(checkpoint_every=1000)
    writer = LogWriter(log, checkpoint_interval_s=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        await writer.append([make_record(i) for i in range(3)])
        assert log.last_checkpoint is None  # not by count: 3 < 1000
        await covered(writer, 3)
        first = log.last_checkpoint
        assert first is not None
        await writer.append([make_record(i) for i in range(3, 5)])
        await covered(writer, 5)
        second = log.last_checkpoint
        assert second is not None and second.signed_at_us - first.signed_at_us >= 0.3e6 * 0.9
        assert log.unsigned == 0
        assert log.verify().signed_through == 5
        await writer.close()
        tg.cancel_scope.cancel()


async def test_an_anchored_log_signs_nothing_by_time_before_its_release(state_dir: Path) -> None:
    log = DecisionLog(
        state_dir / "decisions.db", signing_key_path=state_dir / "decision-log.key", anchored=True
    )
    log.append_batch([make_record(0)])  # written held: no signature
    writer = LogWriter(log, checkpoint_interval_s=0.1)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        await anyio.sleep(0.4)
        assert log.last_checkpoint is None and log.unsigned == 1
        await writer.call(log.anchor, None)
        writer.release()
        await covered(writer, 1)
        await writer.close()
        tg.cancel_scope.cancel()


def test_the_interval_must_be_positive(open_log: LogFactory) -> None:
    with pytest.raises(ValueError, match="checkpoint_interval_s"):
        LogWriter(open_log(), checkpoint_interval_s=0)
