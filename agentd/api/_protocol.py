"""The registration API's requests: the control plane's envelope, with these `args`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_API_REQUEST_BYTES", "RegisterArgs", "RegistrationSpec"]

MAX_API_REQUEST_BYTES = 64 * 1024


class RegistrationSpec(BaseModel):
    """What an external agent says about itself (recorded; tools and models are still decided
    by policy on every call)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=1000)
    tools: list[str] = Field(default_factory=list, max_length=256)
    models: list[str] = Field(default_factory=list, max_length=64)


class RegisterArgs(BaseModel):
    """`api.register` (bootstrap: name, public_key and token) or `api.register.<name>`
    (pre-authorized: the subject names who registers; spec only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: RegistrationSpec
    name: str | None = Field(None, max_length=63)
    public_key: str | None = Field(None, max_length=64)
    token: str | None = Field(None, max_length=256)
