"""What the daemon writes is its user's alone, whatever umask it was started with (issue 18,
item 10): the decision log, checkpoints, logs, state, tools' data. A daemon started under
umask 022 (the common default) creates nothing that group or others may read."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import running_daemon, write_config

pytestmark = pytest.mark.integration

# meant for others, and written with an explicit mode: the decision log's public key
PUBLIC = {".pub"}


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_daemon_under_umask_022_creates_nothing_others_can_read(
    tmp_path: Path, umask_022: None
) -> None:
    config = write_config(tmp_path)
    with running_daemon(config) as daemon:
        out = daemon.agentctl("send", "echo", '{"hello": 1}', "--wait")
        assert out.returncode == 0 and json.loads(out.stdout) == {"hello": 1}, out.stderr
        assert daemon.stop() == 0, daemon.log()
    state = daemon.state_dir
    created = [p for p in state.rglob("*") if not p.is_symlink()]
    assert any(p.name.startswith("decisions") for p in created), sorted(map(str, created))
    readable = [
        f"{p.relative_to(state)} {stat.filemode(p.stat().st_mode)}"
        for p in created
        if p.stat().st_mode & 0o077 and p.suffix not in PUBLIC
    ]
    assert readable == [], readable
