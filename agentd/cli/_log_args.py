"""agentctl's `audit`, `trace` and `runs` arguments, apart from what runs them (agentd.cli._audit):
every invocation builds the whole parser, so this module imports the standard library only."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentd.errors import AgentdError

__all__ = ["RUN_STATUSES", "AuditFailed", "add_log_commands"]

# agentd.audit.RUN_STATUSES, spelled out so that parsing does not import the log's code
# (tests/test_console.py checks that the two agree)
RUN_STATUSES = ("pending", "running", "ok", "failed", "dead")


class AuditFailed(AgentdError):
    """The log (or a proof) did not verify; the message names the first bad record."""


def add_log_commands(sub: Any) -> None:
    """Add `audit`, `trace` and `runs` to agentctl's subcommands."""
    audit_p = sub.add_parser("audit", help="verify the decision log, prove and export records")
    audit_sub = audit_p.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain and signed checkpoints")
    verify.add_argument("--from", dest="from_seq", type=int, help="first record (seq) to check")
    verify.add_argument("--to", dest="to_seq", type=int, help="last record (seq) to check")
    verify.add_argument("--log", type=Path, help="verify this file offline (no daemon)")
    verify.add_argument(
        "--key", type=Path, help="pinned public key for --log (default: the .pub beside it)"
    )
    verify.add_argument(
        "--witness",
        type=Path,
        action="append",
        default=[],
        help="with --log: checkpoints published outside the log ([trace.witness].file); the"
        " daemon checks its anchor and configured witnesses itself",
    )
    prove = audit_sub.add_parser("prove", help="an inclusion proof of one record")
    prove.add_argument("id", help="record id")
    prove.add_argument("--out", type=Path, help="write the proof here (default: stdout)")
    prove.add_argument(
        "--verifier-out", type=Path, help="also write the standalone verifier (one .py file)"
    )
    export = audit_sub.add_parser("export", help="records as JSON lines, streamed in pages")
    export.add_argument("--since", help="from (epoch s, ISO 8601 or an age: 2h, 7d)")
    export.add_argument("--until", help="before (same forms)")
    export.add_argument("--out", type=Path, help="write here (default: stdout)")
    export.add_argument("--page-bytes", type=int, help=argparse.SUPPRESS)  # tests: small pages
    trace_p = sub.add_parser("trace", help="the decisions of a run, trace or conversation")
    trace_p.add_argument("id", nargs="?", help="run, trace, conversation, message or record id")
    trace_p.add_argument("--follow", "-f", action="store_true", help="tail decisions live")
    trace_p.add_argument("--agent", help="with --follow: only this agent's decisions")
    trace_p.add_argument("--count", type=int, help="with --follow: stop after this many")
    trace_p.add_argument("--limit", type=int, default=5000, help="most records to fetch")
    runs_p = sub.add_parser("runs", help="runs, newest first")
    runs_p.add_argument("--agent")
    runs_p.add_argument("--since", help="epoch s, ISO 8601 or an age (default: 24h)")
    runs_p.add_argument("--status", choices=RUN_STATUSES)
    runs_p.add_argument("--limit", type=int, default=50)
    runs_p.add_argument("--page-bytes", type=int, help=argparse.SUPPRESS)  # tests: small pages
    runs_p.add_argument("--scan-records", type=int, help=argparse.SUPPRESS)  # tests: short scans
