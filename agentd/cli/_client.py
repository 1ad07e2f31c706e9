"""The operator's side of the control plane: connect, request, decode, say clearly what failed."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import nats.errors
from nats.aio.client import Client

from agentd.bus import Subjects, connect, embedded_url
from agentd.config import find_config, load_config
from agentd.control import decode_reply, encode_request
from agentd.errors import AgentdError, BusUnavailable

__all__ = ["ControlClient", "DaemonUnreachable", "resolve_url"]


class DaemonUnreachable(AgentdError):
    """No daemon answered: NATS is down, or no agentd listens on it."""


def resolve_url(url: str | None, config: str | None) -> tuple[str, str]:
    """The NATS URL and subject prefix: --url, then $AGENTD_URL, then the config file."""
    loaded = load_config(find_config(config))
    prefix = loaded.config.bus.prefix
    chosen = url or os.environ.get("AGENTD_URL")
    if chosen:
        return chosen, prefix
    return loaded.config.bus.url or embedded_url(loaded.config.bus.embedded), prefix


class ControlClient:
    """`async with ControlClient(url) as ctl: await ctl.call("status")`."""

    def __init__(
        self, url: str, *, prefix: str = "agentd", timeout_s: float = 5.0, operator: str = ""
    ) -> None:
        self.url = url
        self.subjects = Subjects(prefix)
        self.timeout_s = timeout_s
        # who is asking, checked against policy (ctl:<verb>); operators get credentials of their
        # own with identity (NATS users), until then the console on this host is `local`
        self.operator = operator or os.environ.get("AGENTD_OPERATOR") or "local"
        self._nc: Client | None = None

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("ControlClient used outside 'async with'")
        return self._nc

    async def __aenter__(self) -> ControlClient:
        try:
            self._nc = await connect(
                self.url, name="agentctl", timeout_s=min(self.timeout_s, 3.0), reconnect=False
            )
        except BusUnavailable as exc:
            raise DaemonUnreachable(
                f"cannot reach agentd: {exc}. "
                "Is the daemon running? Start it with `agentd run`, or point agentctl at it "
                "with --url or AGENTD_URL."
            ) from None
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def call(
        self, verb: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Ask the daemon; `timeout_s` overrides the client's timeout for a slow verb."""
        subject = self.subjects.ctl(verb)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            reply = await self.nc.request(
                subject, encode_request(args, operator=self.operator), timeout=timeout
            )
        except nats.errors.NoRespondersError:
            raise DaemonUnreachable(
                f"no agentd is answering on {subject} at {self.url}: NATS is up but the daemon is "
                "not (or uses another [bus].prefix)."
            ) from None
        except nats.errors.TimeoutError:
            raise DaemonUnreachable(
                f"agentd did not answer {verb!r} within {timeout:.0f}s at {self.url}"
            ) from None
        return decode_reply(reply.data)
