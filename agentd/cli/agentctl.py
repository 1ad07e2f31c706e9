"""`agentctl`: the operator's console. Speaks to the daemon over NATS (`agentd.ctl.<verb>`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from agentd.bus import new_id
from agentd.cli._client import ControlClient, DaemonUnreachable, resolve_url
from agentd.cli._table import render_table
from agentd.errors import AgentdError, ConfigError, ControlError

Command = Callable[[ControlClient, argparse.Namespace], Awaitable[Any]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentctl", description="operate a running agentd")
    parser.add_argument("--url", help="NATS URL of the daemon (default: $AGENTD_URL or the config)")
    parser.add_argument("--config", help="config file to read the URL from")
    parser.add_argument("--json", action="store_true", help="print raw JSON for scripts")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="daemon version, uptime, services")
    sub.add_parser("ps", help="agents and their replicas")
    send = sub.add_parser("send", help="send a JSON payload to an agent")
    send.add_argument("agent")
    send.add_argument("payload", help='JSON, e.g. \'{"text": "hi"}\'')
    send.add_argument("--wait", action="store_true", help="wait for the run and print its output")
    send.add_argument("--conversation", help="conversation id (default: a new one)")
    send.add_argument("--wait-timeout", type=float, default=60.0, help="seconds --wait waits")
    return parser


async def _status(ctl: ControlClient, args: argparse.Namespace) -> Any:
    result = await ctl.call("status")
    if args.json:
        return result
    lines = [
        f"agentd {result['version']}  pid {result['pid']}  up {result['uptime_s']:.0f}s",
        f"nats   {result['nats_url']}{' (embedded)' if result['embedded_nats'] else ''}",
        f"state  {result['state_dir']}",
        f"config {result['config']}",
        "",
        render_table(["service", "state"], sorted(result["services"].items())),
    ]
    for err in result.get("spec_errors", []):
        lines.append(f"\nagent spec error: {err}")
    return "\n".join(lines)


async def _ps(ctl: ControlClient, args: argparse.Namespace) -> Any:
    agents = await ctl.call("ps")
    if args.json:
        return agents
    rows = []
    for agent in agents:
        if not agent["replicas"]:
            state = "failed" if agent["failed"] else "stopped"
            rows.append(
                [agent["agent"], agent["version"], "-", "-", state, "-", 0, 0, agent["error"]]
            )
        for r in agent["replicas"]:
            rows.append(
                [
                    agent["agent"],
                    agent["version"],
                    r["name"],
                    r["pid"],
                    r["state"],
                    r["uptime_s"],
                    r["restarts"],
                    r["inflight"],
                    r["last_error"],
                ]
            )
    headers = [
        "agent",
        "version",
        "replica",
        "pid",
        "state",
        "uptime_s",
        "restarts",
        "runs",
        "last_error",
    ]
    return render_table(headers, rows)


async def _send(ctl: ControlClient, args: argparse.Namespace) -> Any:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ControlError("bad_request", f"the payload is not valid JSON: {exc}") from None
    request: dict[str, Any] = {"to": args.agent, "payload": payload}
    if args.conversation:
        request["conversation_id"] = args.conversation
    if not args.wait:
        result = await ctl.call("send", request)
        return result if args.json else f"sent {result['message_id']} to {result['to']}"
    reply_subject = ctl.subjects.reply("ctl", new_id())
    sub = await ctl.nc.subscribe(reply_subject, max_msgs=1)
    request["reply_to"] = reply_subject
    sent = await ctl.call("send", request)
    try:
        msg = await sub.next_msg(timeout=args.wait_timeout)
    except Exception:
        raise ControlError(
            "timeout",
            f"message {sent['message_id']} was accepted but its run did not finish within "
            f"{args.wait_timeout:.0f}s; it stays in {args.agent}'s inbox",
        ) from None
    result = json.loads(msg.data)
    if args.json:
        return result
    if not result.get("ok"):
        raise ControlError("run_failed", f"the run failed: {result.get('error')}")
    return json.dumps(result.get("output"), indent=2)


COMMANDS: dict[str, Command] = {"status": _status, "ps": _ps, "send": _send}


async def _main(args: argparse.Namespace) -> Any:
    url, prefix = resolve_url(args.url, args.config)
    async with ControlClient(url, prefix=prefix, timeout_s=args.timeout) as ctl:
        return await COMMANDS[args.command](ctl, args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = anyio.run(_main, args)
    except DaemonUnreachable as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return 1
    except ControlError as exc:
        print(f"agentctl: {exc} [{exc.code}]", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return 2
    except AgentdError as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if out is not None:
        print(out if isinstance(out, str) else json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
