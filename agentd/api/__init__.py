"""The registration API for external agents on `agentd.api.*` (see docs/identity.md)."""

from agentd.api._protocol import MAX_API_REQUEST_BYTES, RegisterArgs, RegistrationSpec
from agentd.api._registration import RegistrationService

__all__ = ["MAX_API_REQUEST_BYTES", "RegisterArgs", "RegistrationService", "RegistrationSpec"]
