"""Heartbeats cannot grow the daemon's memory (issue 18, item 9).

A replica publishes on its own heartbeat subject, so it can say anything there: invent replica
names (`alpha-flood-1`, `alpha-flood-2`, ...) and pad each beat to nearly 1 MB. The tracker used
to keep every name that started with `<agent>-`, with its whole payload, forever. Now it keeps
only replicas the fleet started, and of each beat only the bounded fields the daemon reads.
The attack runs from inside alpha's credentials.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import pytest

from agentd.daemon._heartbeats import HeartbeatTracker
from tests.harness import DaemonProcess
from tests.security.support import agent_creds, connected, rss_mb

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FLOOD = 120
PADDING = 900_000  # under the server's 1 MB max_payload, as in the finding


def beat(replica: str, padding: int = 0, **extra: Any) -> bytes:
    body = {
        "agent": "alpha",
        "replica": replica,
        "pid": os.getpid(),
        "state": "ready",
        "inflight": 0,
        "completed": 1,
        "version": "v1",
        **extra,
    }
    if padding:
        body["junk"] = "x" * padding
    return json.dumps(body).encode()


async def flood_into(tracker: HeartbeatTracker, secure: DaemonProcess, names: list[str]) -> None:
    """Subscribe `tracker` to the real bus, publish `names`' beats as alpha, then one beat for
    `alpha-started` (the last on the same connection: when it has arrived, all have)."""
    async with connected(secure, None) as daemon_rights:
        await daemon_rights.nc.subscribe("agentd.hb.*", cb=tracker.on_message)
        await daemon_rights.nc.flush()
        async with connected(secure, agent_creds(secure, "alpha")) as alpha:
            for name in names:
                await alpha.nc.publish("agentd.hb.alpha", beat(name, padding=2_000))
            await alpha.nc.publish("agentd.hb.alpha", beat("alpha-started", padding=5_000))
            await alpha.nc.flush()
            for _ in range(500):  # up to 10 s
                if "alpha-started" in tracker.tracked:
                    return
                await anyio.sleep(0.02)
            raise AssertionError("the last beat never arrived")


async def test_beats_for_replicas_the_fleet_did_not_start_are_not_kept(
    secure: DaemonProcess,
) -> None:
    names = [f"alpha-flood-{i}" for i in range(50)]
    tracker = HeartbeatTracker(1.0)
    tracker.expect("alpha-started")  # as the fleet does when it starts a replica
    await flood_into(tracker, secure, names)
    assert set(tracker.tracked) == {"alpha-started"}
    # of the started replica's beat, only what the daemon reads, bounded: no padding
    kept = tracker.tracked["alpha-started"]
    assert "junk" not in kept and len(json.dumps(kept)) < 300, kept


async def test_control_a_tracker_that_expects_every_name_keeps_them(secure: DaemonProcess) -> None:
    """The same flood, with the protection off (every invented name expected): all are kept,
    so the test above would see them."""
    names = [f"alpha-flood-{i}" for i in range(50)]
    tracker = HeartbeatTracker(1.0)
    for name in [*names, "alpha-started"]:
        tracker.expect(name)
    await flood_into(tracker, secure, names)
    assert set(names) <= set(tracker.tracked)


async def test_a_heartbeat_flood_from_inside_a_replica_leaves_the_daemon_bounded(
    secure: DaemonProcess,
) -> None:
    """The finding: FLOOD beats of ~900 KB under invented names, at the real daemon."""
    before_log = secure.log()
    before = rss_mb(secure.pid)
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        for i in range(FLOOD):
            await alpha.nc.publish("agentd.hb.alpha", beat(f"alpha-flood-{i}", padding=PADDING))
            if i % 10 == 9:
                await alpha.nc.flush()
        # and small ones under invented names: dropped for the name, not the size
        for i in range(FLOOD):
            await alpha.nc.publish("agentd.hb.alpha", beat(f"alpha-invented-{i}"))
        await alpha.nc.flush()
    too_big = "bytes; the limit is 16384 bytes"  # [agentd.daemon._heartbeats] MAX_HEARTBEAT_BYTES
    with anyio.fail_after(30):
        while True:
            log = secure.log()[len(before_log) :]
            invented = log.count("which the fleet did not start")
            if log.count(too_big) >= FLOOD and invented >= FLOOD:
                break
            await anyio.sleep(0.1)
    after = rss_mb(secure.pid)
    print(
        f"\nheartbeat flood: {FLOOD} x {PADDING // 1000} KB + {FLOOD} invented names; "
        f"daemon RSS {before:.0f} -> {after:.0f} MiB"
    )
    # the daemon's own view is unchanged: alpha's one real replica, still alive
    ps = json.loads(secure.agentctl("--json", "ps").stdout)
    (alpha_row,) = [row for row in ps if row["agent"] == "alpha"]
    assert [r["state"] for r in alpha_row["replicas"]] == ["running"], alpha_row
