"""Credentials for one NATS identity: a small JSON file, mode 0600, under the state directory.

The file holds what a client needs to connect as that identity and nothing it does not:
the identity's name, its NATS nkey seed (the server holds only the public key) or, for the
bootstrap identity, a password, and the inbox prefix its permissions let it subscribe to.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentd.errors import ConfigError

__all__ = ["Credentials", "write_private"]


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """Who a NATS connection is, and how to prove it.

    `identity` is `daemon`, `operator:<name>`, `agent:<name>` or `bootstrap`; `role` is an
    operator's role (admin, operator, viewer) or None.
    """

    identity: str
    nkey_seed: str | None = None
    user: str | None = None
    password: str | None = None
    inbox_prefix: str = "_INBOX"
    role: str | None = None

    @property
    def kind(self) -> str:
        return self.identity.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.identity.split(":", 1)[-1]

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for nats.connect()."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.nkey_seed:
            options["nkeys_seed_str"] = self.nkey_seed
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        return options

    def write(self, path: Path) -> Path:
        """Write atomically with mode 0600 (the file is a secret)."""
        body = {k: v for k, v in asdict(self).items() if v is not None}
        write_private(path, json.dumps(body, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Credentials:
        """Read a credentials file; ConfigError names the file and what is wrong with it."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(str(path), ["credentials file does not exist"]) from None
        except PermissionError:
            raise ConfigError(
                str(path), ["credentials file is not readable by this user"]
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(str(path), [f"not a credentials file (JSON): {exc}"]) from None
        return cls.from_json(text, source=str(path))

    def to_json(self) -> str:
        """The credentials as the file holds them (a secret: pass it by handle, never log it)."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Credentials:
        """Credentials from their JSON text; ConfigError names `source` (a file, a variable)."""
        path = source
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(str(path), [f"not a credentials file (JSON): {exc}"]) from None
        if not isinstance(raw, dict) or not isinstance(raw.get("identity"), str):
            raise ConfigError(str(path), ["not a credentials file: no 'identity'"])
        known = {"identity", "nkey_seed", "user", "password", "inbox_prefix", "role"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(str(path), [f"unknown keys {unknown}"])
        if not all(isinstance(v, str) for v in raw.values()):
            raise ConfigError(str(path), ["every value must be a string"])
        return cls(**raw)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by this user only (mode 0600, its directory
    0700 when created): a reader sees the old file or the new one, never a part, and the
    secret is never on disk with wider permissions, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
