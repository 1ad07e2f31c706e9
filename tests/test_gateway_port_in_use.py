"""A gateway port already in use stops `agentd run` with one error naming the port and the key
to change, not an exception-group traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.harness import write_config


def test_a_gateway_port_in_use_is_one_error_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, extra=f"\n[gateway]\nport = {port}\n")
        result = subprocess.run(
            [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "run"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "set [gateway].port" in result.stderr
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
