"""[tools.mcp_endpoint]: a bad listen address or an endpoint nobody could authenticate to is a
config error naming the key; a port already taken stops the start with what to change."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.bus import Subjects
from agentd.config import McpEndpointConfig, ToolsConfig, load_config
from agentd.errors import ConfigError
from agentd.tools import McpEndpoint, ToolRegistry


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "agentd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    return info.value.problems


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:8765", "listens on loopback only"),
        ("192.168.1.10:8765", "listens on loopback only"),
        ("example.com:8765", "listens on loopback only"),
        ("127.0.0.1", "must be HOST:PORT"),
        ("127.0.0.1:99999", "is not in 0..65535"),
    ],
)
def test_a_listen_address_off_loopback_or_malformed_is_refused(
    tmp_path: Path, listen: str, expected: str
) -> None:
    problems = _problems(tmp_path, f'[tools.mcp_endpoint]\nenabled = true\nlisten = "{listen}"\n')
    assert any(p.startswith("tools.mcp_endpoint.listen:") and expected in p for p in problems), (
        problems
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:8765", "localhost:8765", "127.0.0.2:1"])
def test_loopback_addresses_are_accepted(tmp_path: Path, listen: str) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text(f'[tools.mcp_endpoint]\nenabled = true\nlisten = "{listen}"\n')
    assert load_config(path).config.tools.mcp_endpoint.listen == listen


def test_an_endpoint_without_any_token_issuer_is_refused(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        "[gateway]\nenabled = false\n[identity]\nenabled = false\n"
        "[tools.mcp_endpoint]\nenabled = true\n",
    )
    assert any("needs [gateway].enabled or [identity].enabled" in p for p in problems), problems


def test_config_check_names_the_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "agentd.toml"
    policies = Path(__file__).resolve().parent.parent / "policies"  # config check reads them
    path.write_text(
        f'[policy]\ndir = "{policies}"\n'
        '[tools.mcp_endpoint]\nenabled = true\nlisten = "127.0.0.1:9011"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "mcp endpoint: http://127.0.0.1:9011/mcp" in out.stdout
    path.write_text('[tools.mcp_endpoint]\nlisten = "10.0.0.1:9011"\n')
    bad = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "tools.mcp_endpoint.listen" in bad.stderr


@pytest.mark.anyio
async def test_a_port_in_use_stops_the_start_with_what_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = McpEndpoint(
            None,  # type: ignore[arg-type]  # never reached: the bind fails first
            Subjects("agentd"),
            config=McpEndpointConfig(enabled=True, listen=f"127.0.0.1:{port}"),
            tools=ToolsConfig(),
            registry=ToolRegistry(),
            allowed_tools=lambda agent: None,
            authenticate=lambda token: None,
            record=lambda kind, **fields: None,
        )
        with pytest.raises(ConfigError) as info:
            await endpoint.run()
    assert "[tools.mcp_endpoint]" in str(info.value) and f":{port}" in str(info.value)
    assert "port 0 picks a free one" in str(info.value)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
