"""The `[trace]` configuration section: where the decision log lives and how it behaves.

```toml
[trace]
log_file = "decisions.db"            # relative paths are under the state directory
signing_key_file = "decision-log.key"
checkpoint_every = 1000              # records between signed checkpoints
synchronous = "NORMAL"               # "FULL" survives power loss, at a cost per commit
redact_patterns = ['sk-[A-Za-z0-9]{20,}']
max_inline_bytes = 16384             # payloads above this are kept as digests only
retention_max_age_s = 7776000        # 90 days; unset keeps everything
retention_max_records = 50000000
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._log import DecisionLog
from ._redact import Redactor
from ._retention import PruneResult

__all__ = ["DecisionLogConfig", "apply_retention", "open_decision_log"]


class DecisionLogConfig(BaseModel):
    """Settings of the decision log (the `[trace]` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_file: str = "decisions.db"
    signing_key_file: str = "decision-log.key"
    checkpoint_every: int = Field(default=1000, ge=1)
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    redact_patterns: tuple[str, ...] = ()
    max_inline_bytes: int = Field(default=16384, ge=64)
    retention_max_age_s: float | None = Field(default=None, gt=0)
    retention_max_records: int | None = Field(default=None, ge=1)

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact pattern {pattern!r} is not a regex: {exc}") from exc
            if compiled.search(""):
                raise ValueError(f"redact pattern {pattern!r} matches the empty string")
        return patterns

    def redactor(self) -> Redactor:
        return Redactor(self.redact_patterns, max_inline_bytes=self.max_inline_bytes)


def open_decision_log(config: DecisionLogConfig, state_dir: Path) -> DecisionLog:
    """Open (or create) the decision log described by `config` under `state_dir`."""
    return DecisionLog(
        state_dir / config.log_file,
        signing_key_path=state_dir / config.signing_key_file,
        checkpoint_every=config.checkpoint_every,
        synchronous=config.synchronous,
        redactor=config.redactor(),
    )


def apply_retention(
    log: DecisionLog, config: DecisionLogConfig, *, now: float | None = None
) -> PruneResult:
    """Prune `log` by the configured limits (call it periodically, e.g. hourly)."""
    return log.prune(
        max_age_s=config.retention_max_age_s,
        max_records=config.retention_max_records,
        now=now,
    )
