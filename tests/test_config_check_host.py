"""`agentd config check` runs every check `agentd run` runs before starting, and says which are
about this host rather than the file: a config it calls ok is one `run` does not refuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO


def check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "AGENTD_CHECKPOINT_DSN"}
    return subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def test_a_config_run_would_refuse_fails_the_check_naming_each_host_problem(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agentd.toml"
    config.write_text(
        '[policy]\ndir = "missing-policies"\n[checkpoints]\nbackend = "postgres"\n'
        '[models.m]\nmodel = "/nonexistent/model"\nlauncher = { python = "/no/such/python" }\n'
    )
    result = check(config)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f"ok: {config}" in out  # the file itself is valid
    assert "FAIL host: policy files in" in out and "model.conf" in out
    assert "FAIL host: model directories" in out and "/no/such/python" in out
    assert "FAIL host: checkpoint backend postgres" in out and "AGENTD_CHECKPOINT_DSN" in out
    assert "would refuse to start on this host (3)" in out
    # and `run` does refuse it (the first of them stops it before anything starts)
    run = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "model.conf" in run.stderr, run.stderr


def test_a_config_this_host_can_run_passes_every_check(tmp_path: Path) -> None:
    config = tmp_path / "agentd.toml"
    config.write_text(f'[policy]\ndir = "{REPO / "policies"}"\n')
    result = check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.count("ok   host: ") == 5
