"""Read agentd.toml into a `Config`, resolving relative paths against the file's directory."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentd.config._errors import describe_validation_error
from agentd.config._models import Config, ModelPoolConfig, TlsConfig
from agentd.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_NAME", "LoadedConfig", "find_config", "load_config"]

DEFAULT_CONFIG_NAME = "agentd.toml"


class LoadedConfig:
    """A validated `Config` and the file it came from; paths in it are absolute."""

    __slots__ = ("config", "path")

    def __init__(self, config: Config, path: Path | None) -> None:
        self.config = config
        self.path = path

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<defaults>"


def find_config(explicit: str | Path | None = None) -> Path | None:
    """The config file to use: `--config`, then $AGENTD_CONFIG, then ./agentd.toml if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("AGENTD_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.exists() else None


def load_config(path: str | Path | None) -> LoadedConfig:
    """Load and validate a config file (or the built-in defaults when `path` is None).

    Raises ConfigError naming the file and listing every bad field with its TOML path.
    """
    if path is None:
        return LoadedConfig(_resolve(Config(), Path.cwd()), None)
    path = Path(path).absolute()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path), ["file not found (pass --config or set AGENTD_CONFIG)"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), describe_validation_error(exc)) from None
    return LoadedConfig(_resolve(config, path.parent), path)


def _resolve(config: Config, base: Path) -> Config:
    """Make every relative path absolute against `base` (the config file's directory)."""

    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    daemon = config.daemon.model_copy(update={"state_dir": absolute(config.daemon.state_dir)})
    embedded = config.bus.embedded
    embedded = embedded.model_copy(
        update={
            "binary": absolute(embedded.binary) if embedded.binary else None,
            "store_dir": absolute(embedded.store_dir) if embedded.store_dir else None,
        }
    )

    def absolute_tls(tls: TlsConfig) -> TlsConfig:
        keys = ("cert_file", "key_file", "ca_file")
        return tls.model_copy(update={k: absolute(v) for k in keys if (v := getattr(tls, k))})

    tls = absolute_tls(config.bus.tls)
    gateway = config.gateway.model_copy(update={"tls": absolute_tls(config.gateway.tls)})
    creds = absolute(config.bus.creds_file) if config.bus.creds_file else None
    bus = config.bus.model_copy(update={"embedded": embedded, "tls": tls, "creds_file": creds})
    agents = config.agents.model_copy(update={"dir": absolute(config.agents.dir)})
    policy = config.policy.model_copy(update={"dir": absolute(config.policy.dir)})
    mcp = {  # a stdio MCP server runs in agentd.toml's folder unless it says otherwise
        name: server.model_copy(update={"cwd": absolute(server.cwd or Path("."))})
        if server.command is not None
        else server
        for name, server in config.tools.mcp.items()
    }
    tools = config.tools.model_copy(update={"dir": absolute(config.tools.dir), "mcp": mcp})
    models = {name: _resolve_pool(pool, base) for name, pool in config.models.items()}
    return config.model_copy(
        update={
            "daemon": daemon,
            "bus": bus,
            "agents": agents,
            "policy": policy,
            "tools": tools,
            "models": models,
            "gateway": gateway,
        }
    )


def _resolve_pool(pool: ModelPoolConfig, base: Path) -> ModelPoolConfig:
    """A pool's model directory and launcher interpreter, made absolute against `base`.

    A model is a path when it starts with ``.`` or ``/`` or names something under `base`;
    otherwise it is a hub id (``org/name``) and stays as written.
    """
    model = pool.model
    if model.startswith((".", "/", "~")) or (base / model).exists():
        model = str((base / Path(model).expanduser()).resolve())
    launcher = pool.launcher
    if launcher.python is not None and not launcher.python.is_absolute():
        launcher = launcher.model_copy(update={"python": (base / launcher.python).absolute()})
    return pool.model_copy(update={"model": model, "launcher": launcher})
