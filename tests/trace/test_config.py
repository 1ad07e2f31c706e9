"""The [trace] configuration section."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentd.trace import DecisionLogConfig, DecisionRecord, apply_retention, open_decision_log

TOML = """
[trace]
log_file = "audit/decisions.db"
checkpoint_every = 5
synchronous = "FULL"
redact_patterns = ['tok-[0-9]{6}']
max_inline_bytes = 128
retention_max_records = 4
"""


def test_config_opens_a_working_log(tmp_path: Path) -> None:
    config = DecisionLogConfig.model_validate(tomllib.loads(TOML)["trace"])
    (tmp_path / "audit").mkdir()
    log = open_decision_log(config, tmp_path)
    log.anchor(None)  # [trace].anchor: signing waits for the daemon's anchor check (none here)
    try:
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        log.append_batch(
            [DecisionRecord(kind="llm.call", id=f"r{i}", reason=f"tok-{i:06d}") for i in range(9)]
        )
        wal = (tmp_path / "audit" / "decisions.db-wal").read_bytes()
        assert b"[REDACTED]" in wal
        assert b"tok-000003" not in wal
        result = apply_retention(log, config)
        assert (result.pruned, result.pruned_to) == (5, 5)
        assert log.verify().ok
    finally:
        log.close()
    assert (tmp_path / "decision-log.key").exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"redact_patterns": ["("]},
        {"redact_patterns": [".*"]},
        {"checkpoint_every": 0},
        {"max_inline_bytes": 10},
        {"synchronous": "OFF"},
        {"retention_max_age_s": 0},
        {"unknown": 1},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DecisionLogConfig.model_validate(bad)
