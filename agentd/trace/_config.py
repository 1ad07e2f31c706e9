"""The `[trace]` configuration section: where the decision log lives and how it behaves.

```toml
[trace]
log_file = "decisions.db"            # relative paths are under the state directory
signing_key_file = "decision-log.key"
checkpoint_every = 1000              # records between signed checkpoints
checkpoint_interval_s = 60.0         # and at least this often while records arrive
synchronous = "NORMAL"               # "FULL" survives power loss, at a cost per commit
redact_patterns = ['sk-[A-Za-z0-9]{20,}']
max_inline_bytes = 16384             # payloads above this are kept as digests only
retention_max_age_s = 7776000        # 90 days; unset keeps everything
retention_max_records = 50000000
```
"""

from __future__ import annotations

from pathlib import Path

from agentd.config import TraceConfig

from ._log import DecisionLog
from ._redact import Redactor
from ._retention import PruneResult

__all__ = ["DecisionLogConfig", "apply_retention", "open_decision_log", "redactor_for"]


# The section's model lives in agentd.config with every other section; this is its name here.
DecisionLogConfig = TraceConfig


def redactor_for(config: TraceConfig) -> Redactor:
    return Redactor(config.redact_patterns, max_inline_bytes=config.max_inline_bytes)


def open_decision_log(config: DecisionLogConfig, state_dir: Path) -> DecisionLog:
    """Open (or create) the decision log described by `config` under `state_dir`."""
    return DecisionLog(
        state_dir / config.log_file,
        signing_key_path=state_dir / config.signing_key_file,
        checkpoint_every=config.checkpoint_every,
        synchronous=config.synchronous,
        redactor=redactor_for(config),
        anchored=config.anchor,
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
