"""The systemd units in deploy/systemd/ load cleanly and stay hardened.

`systemd-analyze verify` checks every directive (and that ExecStart exists: the units point at the
install guide's paths, so the test points them at this checkout's binaries). Unknown or misspelt
directives are only warnings for systemd, so any output at all fails the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.config import DaemonConfig

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent
INSTALLED = {
    "/opt/agentd/venv/bin/agentd": str(BIN / "agentd"),
    "/usr/local/bin/nats-server": str(BIN / "nats-server"),
}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing (.ci/run installs Debian's systemd package)",
)


def local_copy(name: str, tmp_path: Path, *, edit: tuple[str, str] | None = None) -> Path:
    text = (UNITS / name).read_text()
    for installed, here in INSTALLED.items():
        text = text.replace(installed, here)
    if edit is not None:
        assert edit[0] in text, f"{edit[0]!r} is not in {name}"
        text = text.replace(*edit)
    unit = tmp_path / name
    unit.write_text(text)
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("name", ["agentd.service", "nats-server.service"])
def test_units_verify_without_a_single_warning(name: str, tmp_path: Path) -> None:
    result = verify(local_copy(name, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    unit = local_copy("agentd.service", tmp_path, edit=("KillMode=mixed", "KillMode=mixd"))
    assert "Failed to parse kill mode" in verify(unit).stderr


def test_agentd_unit_is_a_notify_service_with_a_watchdog_and_a_bounded_stop() -> None:
    unit = directives("agentd.service")
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "KillMode": "mixed",
        "StateDirectory": "agentd",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    for key in ("WatchdogSec", "StartLimitIntervalSec", "StartLimitBurst", "SystemCallFilter"):
        assert key in unit, key
    assert any(v.startswith("char-nvidia") for v in unit["DeviceAllow"])
    # agentd drains for drain_grace_s, then forces its children 5 s later: systemd must not
    # SIGKILL the cgroup before that.
    assert float(unit["TimeoutStopSec"][0]) > DaemonConfig().drain_grace_s + 5


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_agentd_unit_exposure_stays_low(tmp_path: Path) -> None:
    hardened = exposure(local_copy("agentd.service", tmp_path))
    # 1.7 ("OK") when written; the scale is 0 (locked down) to 10 (UNSAFE, no hardening at all).
    assert hardened <= 2.0
    loose = tmp_path / "loose"
    loose.mkdir()
    stripped = local_copy(
        "agentd.service", loose, edit=("ProtectSystem=strict", "ProtectSystem=no")
    )
    assert exposure(stripped) > hardened
