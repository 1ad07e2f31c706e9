"""deploy/nats/agentd-auth.conf stays in step with the accounts agentd renders, and a real
nats-server accepts it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agentd.bus import Subjects
from agentd.identity import agent_imports, bootstrap_imports, operator_imports
from tests.harness import NATS_SERVER, REPO

EXAMPLE = REPO / "deploy" / "nats" / "agentd-auth.conf"


def test_the_example_has_every_import_agentd_renders() -> None:
    text = EXAMPLE.read_text()
    subjects = Subjects()
    wanted = agent_imports(subjects, "echo") + operator_imports(subjects)
    for i in wanted + bootstrap_imports(subjects):
        assert json.dumps(i.subject) in text, i
    assert "jetstream: enabled" in text and '"A_echo"' in text and '"O_alice"' in text


def test_nats_server_accepts_the_example(tmp_path: Path) -> None:
    (tmp_path / "agentd-auth.conf").write_text(EXAMPLE.read_text())
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f'listen: 127.0.0.1:4222\njetstream {{ store_dir: "{tmp_path}" }}\n'
        'include "agentd-auth.conf"\n'
    )
    out = subprocess.run(
        [str(NATS_SERVER), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and "is valid" in out.stderr + out.stdout, out
