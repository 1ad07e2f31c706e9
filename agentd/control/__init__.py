"""The control plane: request/reply JSON on `agentd.ctl.<verb>` (server side and protocol)."""

from typing import TYPE_CHECKING

from agentd._lazy import lazy_attributes
from agentd.control._envelope import (
    PROTOCOL_VERSION,
    decode_reply,
    encode_error,
    encode_ok,
    encode_request,
)

if TYPE_CHECKING:
    from agentd.control._plane import Authenticator, Authorizer, ControlPlane, Handler
    from agentd.control._protocol import READ_ONLY_VERBS, ControlRequest, decode_request
else:  # the daemon's side (pydantic, anyio): imported when first used, never by agentctl
    __getattr__ = lazy_attributes(
        __name__,
        {
            "agentd.control._plane": ("Authenticator", "Authorizer", "ControlPlane", "Handler"),
            "agentd.control._protocol": ("READ_ONLY_VERBS", "ControlRequest", "decode_request"),
        },
    )

__all__ = [
    "PROTOCOL_VERSION",
    "READ_ONLY_VERBS",
    "Authenticator",
    "Authorizer",
    "ControlPlane",
    "ControlRequest",
    "Handler",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_ok",
    "encode_request",
]
