"""The registration API for external agents on `agentd.api.*` (see docs/identity.md)."""

from agentd.api._client import call_api, register_with_token
from agentd.api._protocol import MAX_API_REQUEST_BYTES, RegisterArgs, RegistrationSpec
from agentd.api._registration import RegistrationService

__all__ = [
    # the daemon's side
    "RegistrationService",
    # the external agent's side
    "call_api",
    "register_with_token",
    # requests
    "MAX_API_REQUEST_BYTES",
    "RegisterArgs",
    "RegistrationSpec",
]
