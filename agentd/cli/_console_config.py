"""What agentctl reads of agentd.toml: where the daemon's NATS is, and where operators'
credentials are. Standard library only.

agentctl needs five values of the config file ([bus].url, prefix and TLS, [bus.embedded]'s
address, [daemon].state_dir). Validating the whole file through the config models
(agentd.config, pydantic) cost about 150 ms of CPU on every call, more than everything else
agentctl does for `status` apart from importing nats-py. So agentctl reads these values with
tomllib, resolves them as `load_config` does (the same file search, the same defaults, relative
paths against the file's folder) and checks their types; `agentd config check` validates the
whole file. tests/test_console_config.py holds both readings equal.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.errors import ConfigError

__all__ = ["ConsoleConfig", "EmbeddedAddress", "find_config_file", "read_console_config"]

# the defaults of agentd.config's BusConfig, EmbeddedNatsConfig and DaemonConfig
_PREFIX = "agentd"
_EMBEDDED_HOST = "127.0.0.1"
_EMBEDDED_PORT = 4222
_STATE_DIR = Path(".agentd")


@dataclass(frozen=True)
class EmbeddedAddress:
    """[bus.embedded]'s host and port: where the daemon's own nats-server listens."""

    host: str = _EMBEDDED_HOST
    port: int = _EMBEDDED_PORT


@dataclass(frozen=True)
class ConsoleConfig:
    """agentctl's reading of agentd.toml; paths are absolute."""

    path: Path | None
    url: str | None = None  # [bus].url
    prefix: str = _PREFIX  # [bus].prefix
    tls_enabled: bool = False  # [bus.tls].cert_file set: the daemon's NATS speaks TLS
    ca_file: Path | None = None  # [bus.tls].ca_file
    embedded: EmbeddedAddress = EmbeddedAddress()
    state_dir: Path = _STATE_DIR  # [daemon].state_dir

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<defaults>"


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    """The config file, as agentd.config.find_config finds it: `--config`, then
    $AGENTD_CONFIG, then ./agentd.toml if present (None: the defaults)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("AGENTD_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / "agentd.toml"
    return local if local.exists() else None


def read_console_config(explicit: str | Path | None = None) -> ConsoleConfig:
    """Read what agentctl needs from the config file `find_config_file(explicit)` names.

    Raises ConfigError naming the file, as load_config does, when it cannot be read, is not
    TOML, or one of the values read has the wrong type."""
    found = find_config_file(explicit)
    if found is None:
        base = Path.cwd()
        return ConsoleConfig(None, state_dir=_absolute(_STATE_DIR, base))
    path = found.absolute()
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            str(path), ["file not found (pass --config or set AGENTD_CONFIG)"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    return _interpret(data, path)


def _interpret(data: dict[str, Any], path: Path) -> ConsoleConfig:
    problems: list[str] = []

    def value(where: str, kind: type, default: Any) -> Any:
        table: Any = data
        *sections, key = where.split(".")
        for section in sections:
            table = table.get(section, {})
            if not isinstance(table, dict):
                problems.append(f"{section}: must be a table")
                return default
        found = table.get(key, default)
        if found is not default and (not isinstance(found, kind) or isinstance(found, bool)):
            problems.append(f"{where}: must be a {kind.__name__} (agentd config check says more)")
            return default
        return found

    base = path.parent
    url = value("bus.url", str, None) or None
    prefix = value("bus.prefix", str, _PREFIX)
    cert_file = value("bus.tls.cert_file", str, None)
    ca_file = value("bus.tls.ca_file", str, None)
    host = value("bus.embedded.host", str, _EMBEDDED_HOST)
    port = value("bus.embedded.port", int, _EMBEDDED_PORT)
    state_dir = value("daemon.state_dir", str, str(_STATE_DIR))
    if problems:
        raise ConfigError(str(path), problems)
    return ConsoleConfig(
        path,
        url=url,
        prefix=prefix,
        tls_enabled=cert_file is not None,
        ca_file=_absolute(Path(ca_file), base) if ca_file else None,
        embedded=EmbeddedAddress(host, port),
        state_dir=_absolute(Path(state_dir), base),
    )


def _absolute(path: Path, base: Path) -> Path:
    """As load_config makes a path absolute: against the config file's folder."""
    return path if path.is_absolute() else (base / path).resolve()
