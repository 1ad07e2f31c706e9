"""Which uid each agent's replicas run under, when the daemon may change users.

`[sandbox].users = "auto"` (the default): when the daemon holds CAP_SETUID, CAP_SETGID and
CAP_SYS_ADMIN (a systemd unit run as root, CI), every agent gets a uid of its own from
`[sandbox].uid_base` on, kept in `<state>/sandbox-uids.json` so it stays the same across
restarts (its scratch and checkpoint files keep their owner). Replicas of one agent share it
(they share the agent's checkpoints); different agents never do. "off": replicas run as the
daemon's user. "require": refuse to start without the capabilities (docs/sandbox.md, "A uid
per agent").
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from agentd.config import Config, LoadedAgent
from agentd.errors import ConfigError
from agentd.sandbox import can_mount, can_switch_users
from agentd.sandbox._acl import grant_uid

__all__ = ["UidBook", "own_uids_possible"]

log = logging.getLogger("agentd.sandbox")

FILE_NAME = "sandbox-uids.json"


def own_uids_possible() -> str | None:
    """Why this daemon cannot run replicas under uids of their own; None when it can."""
    if not can_switch_users():
        return "the daemon lacks CAP_SETUID/CAP_SETGID (run it as root, e.g. the systemd unit)"
    if not can_mount():
        return "the daemon lacks CAP_SYS_ADMIN (needed for the replica's own mount namespace)"
    return None


class UidBook:
    """The agent -> uid map of one state directory; None from `uid_of` when users are off."""

    def __init__(self, config: Config, source: str = "agentd.toml") -> None:
        cfg = config.sandbox
        self._base, self._count = cfg.uid_base, cfg.uid_count
        self._path = config.daemon.state_dir / FILE_NAME
        self.enabled = False
        if cfg.mode == "off" or cfg.users == "off":
            return
        why = own_uids_possible()
        if why is None:
            self.enabled = True
        elif cfg.users == "require":
            raise ConfigError(source, [f'[sandbox].users = "require" but {why}'])
        else:
            log.info("sandbox: replicas run as the daemon's user: %s", why)
        self._uids: dict[str, int] = self._load() if self.enabled else {}

    def _load(self) -> dict[str, int]:
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(str(self._path), [f"unreadable uid map: {exc}"]) from None
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in raw.items()
        ):
            raise ConfigError(str(self._path), ["the uid map must be an object of agent: uid"])
        return raw

    def uid_of(self, agent: str) -> int | None:
        """The agent's uid (allocated and saved the first time); None when users are off."""
        if not self.enabled:
            return None
        uid = self._uids.get(agent)
        if uid is not None:
            return uid
        taken = set(self._uids.values())
        for uid in range(self._base, self._base + self._count):
            if uid not in taken:
                break
        else:
            raise ConfigError(
                str(self._path),
                [f"every uid of [sandbox].uid_base..+uid_count ({self._count}) is taken"],
            )
        self._uids[agent] = uid
        self._save()
        return uid

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._uids, indent=1, sort_keys=True))
        os.replace(tmp, self._path)

    def grant_declared(
        self, uid: int, agent: LoadedAgent, read: list[Path], write: list[Path]
    ) -> None:
        """Let `uid` use what the agent's spec declares (`[sandbox].read` / `write`) by ACL
        entries (agentd/sandbox/_acl.py): the owners stay; a path the filesystem cannot give an
        ACL is logged, and the replica meets EACCES there."""
        for paths, writes in ((read, False), (write, True)):
            for path in paths:
                try:
                    grant_uid(str(path), uid, write=writes)
                except OSError as exc:
                    log.warning(
                        "%s: uid %d gets no %s access to %s (%s): give it to the uid, or set "
                        '[sandbox].users = "off"',
                        agent.name,
                        uid,
                        "write" if writes else "read",
                        path,
                        exc.strerror or exc,
                    )

    def hand_over(self, uid: int, *folders: Path | None) -> None:
        """Give the agent's own folders (scratch, checkpoints) and what is in them to `uid`."""
        for folder in folders:
            if folder is None:
                continue
            for root, dirs, files in os.walk(folder):
                os.chown(root, uid, uid)
                for name in [*dirs, *files]:
                    os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)
