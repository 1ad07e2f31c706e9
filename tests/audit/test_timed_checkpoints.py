"""Signed checkpoints by time as well as count (issue 17, item 11): a quiet daemon that holds a
few records, far fewer than `checkpoint_every`, signs a checkpoint covering them once the
newest checkpoint is `checkpoint_interval_s` old, anchored or not; and shutdown signs one.

Real daemons, real `agentctl audit verify` (through the daemon, then offline on the file)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.harness import (
    DaemonProcess,
    decision_records,
    running_daemon,
    send_and_collect,
    write_config,
)

pytestmark = pytest.mark.integration

# a count no test reaches: only time and shutdown sign here
CONFIG = (
    "[trace]\ncheckpoint_every = 100000\ncheckpoint_interval_s = {interval}\nanchor = {anchor}\n"
)


def config(root: Path, *, interval_s: float, anchor: bool) -> Path:
    extra = CONFIG.format(interval=interval_s, anchor=json.dumps(anchor))
    return write_config(root, extra=extra + "[autoscale]\nenabled = false\n")


def send_two(daemon: DaemonProcess) -> None:
    for i in range(2):
        payload = [{"text": f"quiet {i}"}]
        results = anyio.run(partial(send_and_collect, daemon.url, "echo", payload, timeout_s=30))
        assert all(r["ok"] for r in results.values()), results


def verify(daemon: DaemonProcess) -> dict[str, Any]:
    out = daemon.agentctl("--json", "audit", "verify")
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    assert report["ok"], report
    return report


@pytest.mark.parametrize("anchor", [True, False], ids=["anchored", "not-anchored"])
def test_a_quiet_daemon_signs_its_few_records_after_the_interval(
    tmp_path: Path, anchor: bool
) -> None:
    with running_daemon(config(tmp_path, interval_s=0.5, anchor=anchor)) as daemon:
        send_two(daemon)
        held = len(decision_records(tmp_path / "state"))
        assert 0 < held < 100, held
        deadline = time.monotonic() + 20
        report = verify(daemon)
        while report["signed_through"] < held:
            assert time.monotonic() < deadline, f"no checkpoint covers {held} records: {report}"
            time.sleep(0.2)
            report = verify(daemon)
        text = daemon.agentctl("audit", "verify").stdout
        assert "no checkpoint is signed yet" not in text, text
        assert daemon.stop() == 0


def test_shutdown_signs_what_the_interval_has_not(tmp_path: Path) -> None:
    """The control of the test above (an hour's interval: nothing is signed while running) and
    the checkpoint signed at shutdown, which an offline verify of the file reports."""
    with running_daemon(config(tmp_path, interval_s=3600, anchor=False)) as daemon:
        send_two(daemon)
        time.sleep(1.0)  # twice the interval that signs in the test above
        report = verify(daemon)
        assert report["checked"] > 0 and report["signed_through"] == 0, report
        assert "no checkpoint is signed yet" in daemon.agentctl("audit", "verify").stdout
        assert daemon.stop() == 0
    state = tmp_path / "state"
    stored = len(decision_records(state))
    out = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentctl", "--json", "audit", "verify"]
        + ["--log", str(state / "decisions.db"), "--key", str(state / "decision-log.key.pub")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    offline = json.loads(out.stdout)
    assert offline["ok"] and offline["signed_through"] == stored == offline["checked"], offline
