"""`agentctl`: the operator's console. Speaks to the daemon over NATS (`agentd.ctl.<verb>`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentd.cli import _admin
from agentd.cli._flags import is_broken_pipe, quiet_broken_pipe, share_global_flags
from agentd.cli._log_args import AuditFailed, add_log_commands
from agentd.cli._models_view import render_models
from agentd.cli._nodes_view import render_nodes
from agentd.cli._tokens_view import add_tokens_command, tokens
from agentd.cli._views import (
    render_ps,
    render_status,
)
from agentd.errors import AgentdError, ConfigError, ControlError

if TYPE_CHECKING:
    from agentd.cli._client import ControlClient

# Startup cost: every invocation imports this module and builds the whole parser, so both stay
# on the standard library; a verb imports what it needs (NATS, the config models, views) when it
# runs. `python -X importtime -m agentd.cli.agentctl --help` shows what a change costs, and
# bench/console.py measures it.

Command = Callable[["ControlClient", argparse.Namespace], Awaitable[Any]]


def _global_flags(parser: Any, shared: bool) -> None:
    """The flags every verb takes, before or after its name (`agentctl ps --json`)."""

    def default(value: Any) -> Any:  # after the verb: given or not there at all
        return argparse.SUPPRESS if shared else value

    parser.add_argument(
        "--url",
        default=default(None),
        help="NATS URL of the daemon (default: $AGENTD_URL or the config)",
    )
    parser.add_argument("--config", default=default(None), help="config file to read the URL from")
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print raw JSON for scripts"
    )
    parser.add_argument(
        "--timeout", type=float, default=default(5.0), help="seconds to wait for the daemon"
    )
    parser.add_argument(
        "--operator",
        default=default(None),
        help="use this operator's credentials from the state directory "
        "(default: $AGENTD_OPERATOR, else 'local', the default admin)",
    )
    parser.add_argument(
        "--creds",
        default=default(None),
        help="an operator's credentials file (default: $AGENTD_CREDS, see --operator)",
    )
    parser.add_argument(
        "--tls-ca",
        default=default(None),
        help="CA file to trust for a TLS NATS (default: $AGENTD_TLS_CA_FILE, config)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentctl", description="operate a running agentd")
    _global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="daemon version, uptime, services")
    sub.add_parser("ps", help="agents, their replicas and backlog")
    sub.add_parser("nodes", help="cluster hosts: capacity, leases, the placer, placements")
    models = sub.add_parser("models", help="model pools: replicas, placement, state, load")
    models_sub = models.add_subparsers(dest="models_command")
    models_scale = models_sub.add_parser("scale", help="run N replicas of a model pool")
    models_scale.add_argument("pool")
    models_scale.add_argument("replicas", type=int)
    for name, text in (
        ("send", "send a payload (JSON, else plain text) to an agent"),
        ("ask", "send a payload and print the run's reply (send --wait)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("agent")
        p.add_argument(
            "payload",
            help='JSON, e.g. \'{"text": "hi"}\', else plain text: a graph with messages gets it '
            "as a HumanMessage (quote text that is valid JSON: '\"42\"')",
        )
        p.add_argument("--conversation", help="conversation id (default: a new one)")
        p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait")
        if name == "send":
            p.add_argument("--wait", action="store_true", help="wait and print the run's output")
        p.add_argument(
            "--state",
            action="store_true",
            help="print the run's whole output state, not its reply (a graph with messages "
            "replies with its last AI message)",
        )
    scale = sub.add_parser(
        "scale", help="run N replicas of an agent (an autoscaled one stays at N: pinned)"
    )
    scale.add_argument("agent")
    scale.add_argument("replicas", type=int)
    autoscale = sub.add_parser(
        "autoscale", help="hand an agent's replica count back to the autoscaler (on), or pin it"
    )
    autoscale.add_argument("agent")
    autoscale.add_argument("mode", choices=["on", "off"])
    for verb, text in (
        ("restart", "restart an agent's replicas one by one"),
        ("stop", "stop an agent's replicas (they drain first)"),
        ("start", "start a stopped agent, or resume a drained one"),
        ("drain", "stop taking new work; runs in flight finish"),
    ):
        sub.add_parser(verb, help=text).add_argument("agent")
    logs = sub.add_parser("logs", help="an agent's replica logs")
    logs.add_argument("agent")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=50)
    top_p = sub.add_parser("top", help="a live view of agents and lifecycle events")
    top_p.add_argument("--interval", type=float, default=1.0)
    top_p.add_argument("--iterations", type=int, help="redraw this many times, then exit")
    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="messages whose runs kept failing")
    dlq_list.add_argument("--agent")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_sub.add_parser("replay", help="put a dead letter back in its inbox").add_argument(
        "seq", type=int
    )
    agents = sub.add_parser("agents", help="agents with their identities and leases")
    agents_sub = agents.add_subparsers(dest="agents_command")
    agents_sub.add_parser(
        "revoke", help="revoke an agent's credentials and tokens (connections close)"
    ).add_argument("agent")
    agents_sub.add_parser(
        "issue", help="pre-authorize an external agent: write its credentials file"
    ).add_argument("agent")
    operators = sub.add_parser("operators", help="operators' credentials")
    operators_sub = operators.add_subparsers(dest="operators_command", required=True)
    add = operators_sub.add_parser("add", help="issue credentials for an operator")
    add.add_argument("name")
    add.add_argument("--role", choices=["admin", "operator", "viewer"])
    operators_sub.add_parser("revoke", help="revoke an operator's credentials").add_argument("name")
    sub.add_parser("approvals", help="tool calls waiting for a person's approval")
    approve = sub.add_parser("approve", help="let one waiting tool call through, once")
    approve.add_argument("id")
    deny = sub.add_parser("deny", help="refuse one waiting tool call")
    deny.add_argument("id")
    deny.add_argument("--reason", default="denied by an operator")
    policy = sub.add_parser("policy", help="the policy in force")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    policy_sub.add_parser("reload", help="validate and load policies/ (the old one stays if bad)")
    policy_sub.add_parser("test", help="run the golden decision tables (policies/tests)")
    explain = policy_sub.add_parser("explain", help="which rule decides a request, and why")
    explain.add_argument("subject", help="e.g. underwriter, operator:alice")
    explain.add_argument("object", help="e.g. tool:loan.approve, agent:compliance, ctl:scale")
    explain.add_argument("action", help="e.g. call, send, scale")
    explain.add_argument("args", nargs="?", help="tool arguments as JSON")
    explain.add_argument(
        "--tainted", action="store_true", help="as asked by a run tainted by untrusted content"
    )
    add_log_commands(sub)
    add_tokens_command(sub)
    # last: every subcommand above, and any added later, takes the global flags too
    share_global_flags(parser, _global_flags)
    return parser


async def _status(ctl: ControlClient, args: argparse.Namespace) -> Any:
    result = await ctl.call("status")
    return result if args.json else render_status(result)


async def _ps(ctl: ControlClient, args: argparse.Namespace) -> Any:
    agents = await ctl.call("ps")
    return agents if args.json else render_ps(agents)


async def _nodes(ctl: ControlClient, args: argparse.Namespace) -> Any:
    view = await ctl.call("nodes")
    return view if args.json else render_nodes(view)


async def _models(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.models_command == "scale":
        result = await ctl.call("models.scale", {"pool": args.pool, "replicas": args.replicas})
        return result if args.json else f"{result['pool']}: {result['before']} -> {result['after']}"
    pools = await ctl.call("models")
    return pools if args.json else render_models(pools)


async def _send(ctl: ControlClient, args: argparse.Namespace) -> Any:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        if args.payload.lstrip().startswith(("{", "[")):  # meant as JSON: say what is wrong
            raise ControlError("bad_request", f"the payload is not valid JSON: {exc}") from None
        payload = args.payload  # plain text: a messages graph takes it as the user's message
    request: dict[str, Any] = {"to": args.agent, "payload": payload}
    if args.conversation:
        request["conversation_id"] = args.conversation
    if args.state:
        request["whole_state"] = True
    if args.command == "send" and not args.wait:
        result = await ctl.call("send", request)
        return result if args.json else f"sent {result['message_id']} to {result['to']}"
    import time

    import nats.errors

    from agentd.bus import new_id

    reply_subject = ctl.subjects.reply(ctl.subjects.operator_reply_owner, new_id())
    sub = await ctl.nc.subscribe(reply_subject, max_msgs=1)
    request["reply_to"] = reply_subject
    sent = await ctl.call("send", request)
    waiting_since = time.monotonic()
    try:
        msg = await sub.next_msg(timeout=args.wait_timeout)
    except nats.errors.TimeoutError:
        raise ControlError(
            "timeout",
            f"message {sent['message_id']} was accepted but its run did not finish within "
            f"{args.wait_timeout:.0f}s; it stays in {args.agent}'s inbox",
        ) from None
    except (nats.errors.ConnectionClosedError, nats.errors.Error) as exc:
        # the reply can no longer reach us; the message itself is safe in the inbox
        raise ControlError(
            "disconnected",
            f"lost the connection to NATS at {ctl.url} after "
            f"{time.monotonic() - waiting_since:.1f}s of waiting for the run of message "
            f"{sent['message_id']} ({type(exc).__name__}). The message was accepted and its "
            f"run goes on: `agentctl runs --agent {args.agent}` or "
            f"`agentctl trace {sent['message_id']}` shows how it ends",
        ) from None
    result = json.loads(msg.data)
    if args.json:
        return result
    if not result.get("ok"):
        raise ControlError("run_failed", f"the run failed: {result.get('error')}")
    output = result.get("output")
    # a chat reply prints as text; anything else (a state) as JSON
    return output if isinstance(output, str) and not args.state else json.dumps(output, indent=2)


async def _scale(ctl: ControlClient, args: argparse.Namespace) -> Any:
    result = await ctl.call(
        "scale",
        {"agent": args.agent, "replicas": args.replicas},
        timeout_s=max(args.timeout, SLOW_VERB_TIMEOUT_S),
    )
    if args.json:
        return result
    text = f"{args.agent}: {result['before']} -> {result['after']} replicas"
    if result.get("pinned"):
        text += (
            f"\n{args.agent} is pinned at {args.replicas}: the autoscaler leaves it alone until "
            f"`agentctl autoscale {args.agent} on`"
        )
    return text


async def _autoscale(ctl: ControlClient, args: argparse.Namespace) -> Any:
    result = await ctl.call("autoscale", {"agent": args.agent, "enabled": args.mode == "on"})
    if args.json:
        return result
    return f"{args.agent}: {result['replicas']} replicas, scaled by {result['scaled_by']}"


# scale, restart, start and stop answer once their replicas are up or gone (each may take up to
# [agents].ready_timeout_s): they wait this long at least, whatever --timeout says
SLOW_VERB_TIMEOUT_S = 120.0


async def _agent_verb(ctl: ControlClient, args: argparse.Namespace) -> Any:
    slow = args.command in ("restart", "start", "stop")
    timeout_s = max(args.timeout, SLOW_VERB_TIMEOUT_S) if slow else None
    result = await ctl.call(args.command, {"agent": args.agent}, timeout_s=timeout_s)
    if args.json:
        return result
    return f"{args.command}: " + ", ".join(f"{k}={v}" for k, v in result.items())


async def _logs(ctl: ControlClient, args: argparse.Namespace) -> Any:
    from agentd.cli._live import follow_logs, print_logs

    if args.follow:
        await follow_logs(ctl, args.agent, args.lines)
        return None
    result = await ctl.call("logs", {"agent": args.agent, "lines": args.lines})
    if args.json:
        return result
    print_logs(result)
    return None


async def _top(ctl: ControlClient, args: argparse.Namespace) -> Any:
    from agentd.cli._live import top

    await top(ctl, interval_s=args.interval, iterations=args.iterations)


async def _log_view(ctl: ControlClient, args: argparse.Namespace) -> Any:
    """`audit`, `trace` and `runs` (agentd.cli._audit): they import the log's code."""
    from agentd.cli import _audit

    handler: Command = getattr(_audit, args.command)
    return await handler(ctl, args)


COMMANDS: dict[str, Command] = {
    "status": _status,
    "ps": _ps,
    "models": _models,
    "nodes": _nodes,
    "send": _send,
    "ask": _send,
    "scale": _scale,
    "autoscale": _autoscale,
    "restart": _agent_verb,
    "stop": _agent_verb,
    "start": _agent_verb,
    "drain": _agent_verb,
    "logs": _logs,
    "top": _top,
    "dlq": _admin.dlq,
    "policy": _admin.policy,
    "agents": _admin.agents,
    "operators": _admin.operators,
    "tokens": tokens,
    "approvals": _admin.approvals,
    "approve": _admin.approvals,
    "deny": _admin.approvals,
    "audit": _log_view,
    "trace": _log_view,
    "runs": _log_view,
}


async def _main(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from agentd.cli._client import ControlClient, resolve_credentials, resolve_url
    from agentd.cli._console_config import read_console_config

    loaded = read_console_config(args.config)  # what agentctl needs of it, no config models
    url, prefix = resolve_url(args.url, args.config, loaded=loaded)
    credentials = resolve_credentials(args.creds, args.operator, args.config, loaded=loaded)
    tls_ca = args.tls_ca or os.environ.get("AGENTD_TLS_CA_FILE")
    if tls_ca is None:  # the CA the config names for its NATS, if any
        tls_ca = str(loaded.ca_file) if loaded.ca_file else None
    async with ControlClient(
        url,
        prefix=prefix,
        timeout_s=args.timeout,
        operator=args.operator or "",
        credentials=credentials,
        tls_ca_file=Path(tls_ca) if tls_ca else None,
    ) as ctl:
        return await COMMANDS[args.command](ctl, args)


def _run(args: argparse.Namespace) -> Any:
    if args.command == "audit":
        from agentd.cli._audit import is_offline, run_offline

        if is_offline(args):  # `audit verify --log FILE`: no daemon
            return run_offline(args)
    url = args.url or os.environ.get("AGENTD_URL") or ""
    if not url.startswith(("ws://", "wss://")):
        _skip_websocket_transport()
    # asyncio's loop, not anyio.run: nats-py needs asyncio anyway, and anyio's backend (about
    # 20 ms) loads only for the verbs whose handlers use anyio (logs -f, top), which run on it
    import asyncio

    return asyncio.run(_main(args))


def _skip_websocket_transport() -> None:
    """nats-py imports aiohttp (its WebSocket transport) whether or not a URL needs it: about
    half of agentctl's import time. agentctl speaks nats:// and tls:// unless told a ws:// URL,
    so this process tells nats-py there is no aiohttp (it then fails a ws:// URL saying so)."""
    sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = _run(args)
        if out is not None:
            print(out if isinstance(out, str) else json.dumps(out, indent=2, default=str))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except AuditFailed as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return 3
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
    except BaseException as exc:
        if is_broken_pipe(exc):  # `agentctl ps | head -1`: the reader has all it wants
            return quiet_broken_pipe()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
