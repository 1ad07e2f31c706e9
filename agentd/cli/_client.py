"""The operator's side of the control plane: connect, request, decode, say clearly what failed.

Imported by every agentctl verb that speaks to the daemon, so what it imports is what agentctl
costs to start: nats-py, and the light parts of agentd.bus, agentd.control and agentd.identity
(whose pydantic models load only when first used). It reads the config with
`_console_config`, not the config models. tests/test_console_startup.py holds it to that.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import nats.errors
from nats.aio.client import Client

from agentd.bus import Credentials, Subjects, connect, embedded_url
from agentd.cli._console_config import ConsoleConfig, read_console_config
from agentd.control import decode_reply, encode_request
from agentd.errors import AgentdError, BusUnavailable, ConfigError
from agentd.identity import sign_request, trusting_ssl_context

__all__ = ["ControlClient", "DaemonUnreachable", "resolve_credentials", "resolve_url"]


class DaemonUnreachable(AgentdError):
    """No daemon answered: NATS is down, or no agentd listens on it."""


def resolve_url(
    url: str | None, config: str | None, *, loaded: ConsoleConfig | None = None
) -> tuple[str, str]:
    """The NATS URL and subject prefix: --url, then $AGENTD_URL, then the config file
    (`loaded`, if the caller has read it already)."""
    loaded = loaded or read_console_config(config)
    prefix = loaded.prefix
    chosen = url or os.environ.get("AGENTD_URL")
    if chosen:
        return chosen, prefix
    found = loaded.url or embedded_url(loaded.embedded)
    if loaded.url is None and loaded.tls_enabled:
        found = found.replace("nats://", "tls://", 1)
    return found, prefix


def resolve_credentials(
    creds: str | None,
    operator: str | None,
    config: str | None,
    *,
    loaded: ConsoleConfig | None = None,
) -> Credentials | None:
    """Whose credentials agentctl speaks with: --creds FILE, then $AGENTD_CREDS, then the
    state directory's file for --operator NAME ($AGENTD_OPERATOR), then the default admin's
    (`local`). None where the state directory holds no credentials (identity off)."""
    operator = operator or os.environ.get("AGENTD_OPERATOR") or None
    explicit = creds or os.environ.get("AGENTD_CREDS")
    if explicit:
        found = Credentials.load(Path(explicit))
        if operator and found.identity != f"operator:{operator}":
            raise ConfigError(
                explicit,
                [
                    f"these are {found.identity}'s credentials, not operator {operator}'s: "
                    "--operator does not change who you are; drop it or pass their file"
                ],
            )
        return found
    loaded = loaded or read_console_config(config)
    folder = loaded.state_dir / "credentials" / "operators"
    path = folder / f"{operator or 'local'}.creds"
    if path.exists():
        return Credentials.load(path)
    if operator:
        raise ConfigError(
            str(path),
            [
                f"no credentials for operator {operator!r}: an admin issues them with "
                f"`agentctl operators add {operator} --role viewer|operator|admin`; "
                "or pass --creds FILE"
            ],
        )
    return None


class ControlClient:
    """`async with ControlClient(url) as ctl: await ctl.call("status")`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "agentd",
        timeout_s: float = 5.0,
        operator: str = "",
        credentials: Credentials | None = None,
        tls_ca_file: Path | None = None,
    ) -> None:
        self.url = url
        self.subjects = Subjects(prefix)
        self.timeout_s = timeout_s
        self.credentials = credentials
        self._tls_ca_file = tls_ca_file
        # who is asking, checked against policy (ctl:<verb>): with credentials, their operator
        # (the daemon takes it from the signature, not from this field)
        if credentials is not None and credentials.kind == "operator":
            self.operator = credentials.name
        else:
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
                self.url,
                name="agentctl",
                timeout_s=min(self.timeout_s, 3.0),
                reconnect=False,
                credentials=self.credentials,
                tls=self._tls(),
            )
        except BusUnavailable as exc:
            raise DaemonUnreachable(
                f"cannot reach agentd: {exc}. "
                "Is the daemon running? Start it with `agentd run`, or point agentctl at it "
                "with --url or AGENTD_URL."
                + (
                    " NATS refused the credentials: pass --creds FILE (or AGENTD_CREDS) with an "
                    "operator's credentials from <state_dir>/credentials/operators/."
                    if "authorization violation" in str(exc)
                    else ""
                )
            ) from None
        return self

    def _tls(self) -> ssl.SSLContext | None:
        # a CA to trust (--tls-ca, $AGENTD_TLS_CA_FILE, the config's); else, for a tls:// URL,
        # nats-py's own default context (the system's CAs)
        return trusting_ssl_context(self._tls_ca_file) if self._tls_ca_file else None

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
        body = encode_request(args, operator=self.operator)
        headers = sign_request(self.credentials, subject, body) if self.credentials else None
        try:
            reply = await self.nc.request(subject, body, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise DaemonUnreachable(
                f"no agentd is answering on {subject} at {self.url}: NATS is up but the daemon is "
                "not (or uses another [bus].prefix)."
            ) from None
        except nats.errors.TimeoutError:
            raise DaemonUnreachable(
                f"agentd did not answer {verb!r} within {timeout:.0f}s at {self.url}"
            ) from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            raise DaemonUnreachable(
                f"lost the connection to NATS at {self.url} while asking {verb!r}: whether "
                "the daemon acted on it, `agentctl ps` or `agentctl trace` will tell"
            ) from None
        return decode_reply(reply.data)
