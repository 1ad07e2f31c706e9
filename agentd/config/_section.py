"""The base of every agentd.toml section: frozen, and unknown keys are errors."""

from pydantic import BaseModel, ConfigDict

__all__ = ["_Section"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
