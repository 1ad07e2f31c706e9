"""The external agent's side of the registration API: make a key, register, heartbeat.

creds, lease = await register_with_token(url, token=..., name="scorer", spec={...})
nc = await connect(url, name="scorer", credentials=creds)   # now it is `scorer` on the bus
answer = await call_api(nc, "heartbeat", "scorer")          # lease renewed, LLM token
"""

from __future__ import annotations

import json
import ssl
from typing import Any

from agentd.bus import Credentials, connect
from agentd.control import decode_reply, encode_request
from agentd.identity import (
    agent_inbox_prefix,
    bootstrap_credentials,
    new_user_seed,
    public_key_of,
)

__all__ = ["call_api", "register_with_token"]


async def register_with_token(
    url: str,
    *,
    token: str,
    name: str,
    spec: dict[str, Any],
    prefix: str = "agentd",
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 5.0,
) -> tuple[Credentials, dict[str, Any]]:
    """Register `name` with the bootstrap token; returns the agent's own credentials (its seed
    never leaves this process) and the registration (lease, subjects)."""
    seed = new_user_seed()
    bootstrap = bootstrap_credentials(token)
    nc = await connect(url, name="agentd-register", reconnect=False, credentials=bootstrap, tls=tls)
    try:
        args = {"name": name, "public_key": public_key_of(seed), "token": token, "spec": spec}
        reply = await nc.request(f"{prefix}.api.register", encode_request(args), timeout=timeout_s)
    finally:
        await nc.close()
    result: dict[str, Any] = decode_reply(reply.data)
    creds = Credentials(
        identity=f"agent:{name}", nkey_seed=seed, inbox_prefix=agent_inbox_prefix(name)
    )
    return creds, result


async def call_api(
    nc: Any,
    verb: str,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    prefix: str = "agentd",
    timeout_s: float = 5.0,
) -> Any:
    """`api.<verb>.<name>` (register with a pre-authorized identity, heartbeat, deregister) on
    a connection made with `name`'s credentials; raises ControlError on an error reply."""
    body = json.dumps({"v": 1, "args": args or {}}).encode()
    reply = await nc.request(f"{prefix}.api.{verb}.{name}", body, timeout=timeout_s)
    return decode_reply(reply.data)
