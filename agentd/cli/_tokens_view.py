"""`agentctl tokens`: LLM-gateway tokens for clients outside agentd (any OpenAI client, any
language). `issue NAME --pool P [--pool Q] --ttl 30d` prints the token once; `list` shows
name, subject, pools, expiry, issuer and state, never a secret; `revoke NAME` refuses it at the
gateway from then on. Standard library only at import: agentctl builds every parser each run."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from agentd.cli._table import render_table

if TYPE_CHECKING:
    from agentd.cli._client import ControlClient

__all__ = ["add_tokens_command", "tokens"]


def add_tokens_command(sub: Any) -> None:
    tokens_p = sub.add_parser(
        "tokens", help="LLM-gateway tokens for outside clients: issue, list, revoke"
    )
    tokens_sub = tokens_p.add_subparsers(dest="tokens_command")
    tokens_sub.add_parser("list", help="outside tokens: name, pools, expiry, issuer, state")
    issue = tokens_sub.add_parser(
        "issue", help="issue a scoped, expiring token (printed once: the daemon keeps a digest)"
    )
    issue.add_argument("name", help="the client's name: its policy subject is ext:NAME")
    issue.add_argument(
        "--pool",
        dest="pools",
        action="append",
        required=True,
        help="a model pool the token may use (repeat for several)",
    )
    issue.add_argument("--ttl", required=True, help="how long it lives: 30d, 12h, 90m, 2w")
    tokens_sub.add_parser("revoke", help="revoke a token (refused at once)").add_argument("name")


async def tokens(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.tokens_command == "issue":
        result = await ctl.call(
            "tokens.issue", {"name": args.name, "pools": args.pools, "ttl": args.ttl}
        )
        if result.get("warning"):
            print(f"warning: {result['warning']}", file=sys.stderr)
        if args.json:
            return result
        return (
            f"token {result['name']} (policy subject {result['subject']}) for "
            f"{', '.join(result['pools'])}, expires {_when(result['expires_at'])}; "
            "shown once, keep it secret:\n"
            f"{result['token']}\n"
            "use it with any OpenAI client: OPENAI_BASE_URL=<gateway URL> "
            "OPENAI_API_KEY=<the token>"
        )
    if args.tokens_command == "revoke":
        result = await ctl.call("tokens.revoke", {"name": args.name})
        return result if args.json else f"revoked token {result['name']}"
    rows = await ctl.call("tokens")
    return rows if args.json else render_tokens(rows)


def render_tokens(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no tokens (agentctl tokens issue NAME --pool POOL --ttl 30d)"
    table = [
        [
            row["name"],
            row["subject"],
            ",".join(row["pools"]),
            _when(row["expires_at"]),
            row["issued_by"],
            row["state"],
            row.get("revoked_by"),
        ]
        for row in rows
    ]
    headers = ["name", "subject", "pools", "expires", "issued by", "state", "revoked by"]
    return render_table(headers, table)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
