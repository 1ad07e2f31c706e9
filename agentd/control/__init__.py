"""The control plane: request/reply JSON on `agentd.ctl.<verb>` (server side and protocol)."""

from agentd.control._plane import Authenticator, Authorizer, ControlPlane, Handler
from agentd.control._protocol import (
    PROTOCOL_VERSION,
    READ_ONLY_VERBS,
    ControlRequest,
    decode_reply,
    decode_request,
    encode_error,
    encode_ok,
    encode_request,
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
