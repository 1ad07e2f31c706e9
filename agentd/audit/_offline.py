"""Offline audit: verify a copy of the decision-log file with a pinned public key, no daemon."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentd.trace import (
    DecisionLogError,
    VerifyReport,
    public_key_path,
    read_public_key,
    read_witness_file,
    verify_log,
)

__all__ = ["verify_log_file"]


def verify_log_file(
    log_path: Path,
    key_path: Path | None = None,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    witness: Sequence[Path] = (),
) -> tuple[VerifyReport, Path]:
    """Verify `log_path` against the public key at `key_path` (default: the `.pub` file beside
    the log's default signing key, which only shows the log is consistent with itself: pin a
    copy kept elsewhere), and against the checkpoints in the `witness` files (JSON lines, as
    `[trace.witness].file` writes them). Returns the report and the key file used. Never writes
    the file."""
    if not Path(log_path).is_file():
        raise DecisionLogError(f"no decision log at {log_path}")
    key_file = key_path or public_key_path(Path(log_path).with_name("decision-log.key"))
    key = read_public_key(key_file)
    entries = []
    for path in witness:
        try:
            entries.extend(read_witness_file(path))
        except (OSError, ValueError) as exc:
            raise DecisionLogError(f"cannot read the witness file {path}: {exc}") from None
    report = verify_log(Path(log_path), [key], from_seq=from_seq, to_seq=to_seq, witness=entries)
    return report, key_file
