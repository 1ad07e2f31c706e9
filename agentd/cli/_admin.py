"""agentctl's administrative verbs: the policy, approvals, dead letters, agents' identities and
operators' credentials. Light imports only: agentctl imports this module on every invocation."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from agentd.cli._views import render_agents, render_approvals, render_dlq
from agentd.errors import ControlError

if TYPE_CHECKING:
    from agentd.cli._client import ControlClient

__all__ = ["agents", "approvals", "dlq", "operators", "policy"]


async def policy(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.policy_command == "reload":
        result = await ctl.call("policy.reload")
        if args.json:
            return result
        state = "loaded" if result["changed"] else "unchanged"
        return f"policy {state}: version {result['version'][:12]}"
    if args.policy_command == "test":
        result = await ctl.call("policy.test")
        if args.json:
            return result
        if not result["ok"]:
            raise ControlError("golden_failed", result["report"])
        return result["report"]
    request: dict[str, Any] = {
        "subject": args.subject,
        "object": args.object,
        "action": args.action,
    }
    if args.tainted:
        request["tainted"] = True
    if args.args:
        try:
            request["args"] = json.loads(args.args)
        except json.JSONDecodeError as exc:
            raise ControlError("bad_request", f"the arguments are not valid JSON: {exc}") from None
    result = await ctl.call("policy.explain", request)
    return result if args.json else result["text"]


async def approvals(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.command == "approvals":
        waiting = await ctl.call("approvals")
        return waiting if args.json else render_approvals(waiting)
    if args.command == "approve":
        result = await ctl.call("approve", {"id": args.id})
    else:
        result = await ctl.call("deny", {"id": args.id, "reason": args.reason})
    if args.json:
        return result
    return f"{args.command}d {args.id}: " + ", ".join(f"{k}={v}" for k, v in result.items())


async def dlq(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.dlq_command == "list":
        request: dict[str, Any] = {"limit": args.limit}
        if args.agent:
            request["agent"] = args.agent
        entries = await ctl.call("dlq.list", request)
        return entries if args.json else render_dlq(entries)
    result = await ctl.call("dlq.replay", {"seq": args.seq})
    if args.json:
        return result
    return f"replayed dead letter {result['seq']} ({result['message_id']}) into {result['to']}"


async def agents(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.agents_command == "revoke":
        result = await ctl.call("agents.revoke", {"agent": args.agent})
        if args.json:
            return result
        return f"revoked {result['agent']} in {result['revoked_in_s'] * 1000:.0f} ms"
    if args.agents_command == "issue":
        result = await ctl.call("agents.issue", {"agent": args.agent})
        return result if args.json else f"credentials for {result['agent']}: {result['creds']}"
    rows = await ctl.call("agents")
    return rows if args.json else render_agents(rows)


async def operators(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.operators_command == "add":
        request: dict[str, Any] = {"name": args.name}
        if args.role:
            request["role"] = args.role
        result = await ctl.call("operators.add", request)
        if result.get("warning"):
            print(f"warning: {result['warning']}", file=sys.stderr)
        if args.json:
            return result
        return f"credentials for operator {result['operator']}: {result['creds']}"
    result = await ctl.call("operators.revoke", {"name": args.name})
    return result if args.json else f"revoked operator {result['operator']}"
