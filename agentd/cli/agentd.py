"""`agentd`: run the daemon and its admin commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import agentd
from agentd.cli._flags import is_broken_pipe, quiet_broken_pipe, share_global_flags
from agentd.config import Config, find_config, load_agents, load_config
from agentd.errors import AgentdError, ConfigError


def _global_flags(parser: Any, shared: bool) -> None:
    """Flags every command takes, before or after its name (`agentd config check --config F`)."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS if shared else None,
        help="config file (default: $AGENTD_CONFIG or ./agentd.toml)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentd", description="agent runtime and supervisor")
    parser.add_argument("--version", action="version", version=f"agentd {agentd.__version__}")
    _global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--log-format", choices=["human", "json"], help="override [daemon].log_format")
    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser(
        "check", help="validate the configuration and run every pre-start check of `run`"
    )
    agents = sub.add_parser("agents", help="agent spec commands")
    agents_sub = agents.add_subparsers(dest="agents_command", required=True)
    check = agents_sub.add_parser("check", help="validate agent specs")
    check.add_argument("names", nargs="*", help="agents to check (default: all)")
    imp = agents_sub.add_parser(
        "import", help="make agents of a LangGraph Server project's graphs (its langgraph.json)"
    )
    imp.add_argument("langgraph_json", type=Path, help="the project's langgraph.json")
    imp.add_argument("--force", action="store_true", help="replace existing agent.toml files")
    sub.add_parser("doctor", help="check what this host lets agentd protect (sandbox)")
    models = sub.add_parser("models", help="model commands")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    tiny = models_sub.add_parser(
        "build-tiny",
        help="build a tiny random-weight Llama model offline (seconds, deterministic)",
    )
    tiny.add_argument("dir", type=Path, help="directory to write the model into")
    tiny.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    # last: every command above, and any added later, takes the global flags too
    share_global_flags(parser, _global_flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    except BaseException as exc:
        if is_broken_pipe(exc):  # `agentd agents check | head -1`
            return quiet_broken_pipe()
        raise
    return code


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "models":  # needs no configuration
        return _build_tiny(args.dir, args.seed)
    try:
        loaded = load_config(find_config(args.config))
        if args.command == "config":
            cfg = loaded.config
            print(f"ok: {loaded.source}")
            bus = (
                cfg.bus.url
                or f"embedded nats-server on {cfg.bus.embedded.host}:{cfg.bus.embedded.port}"
            )
            print(f"  state_dir: {cfg.daemon.state_dir}\n  bus: {bus}\n  agents: {cfg.agents.dir}")
            endpoint = cfg.tools.mcp_endpoint
            mcp = f"http://{endpoint.listen}/mcp" if endpoint.enabled else "off"
            print(f"  mcp endpoint: {mcp}")
            return _host_checks(loaded)
        if args.command == "agents" and args.agents_command == "import":
            from agentd.cli._import_view import import_langgraph

            agents = loaded.config.agents
            return import_langgraph(args.langgraph_json, agents.dir, args.force, agents.enabled)
        if args.command == "agents":
            return _check_agents(loaded.config.agents.dir, args.names)
        if args.command == "doctor":
            return _doctor(loaded.config)
        from agentd.daemon import run_daemon  # the daemon's imports are only paid for `run`

        return run_daemon(loaded, log_format=args.log_format)
    except ConfigError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    except AgentdError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _host_checks(loaded: Any) -> int:
    """What `agentd run` checks on this host before starting (the file is valid by now)."""
    from agentd.daemon._preflight import host_checks

    failed = 0
    for check in host_checks(loaded):
        if check.problem is None:
            print(f"ok   host: {check.name}")
        else:
            failed += 1
            detail = check.problem.replace("\n", "\n       ")
            print(f"FAIL host: {check.name}\n       {detail}")
    if failed:
        print(f"the file is valid, but `agentd run` would refuse to start on this host ({failed})")
    return 1 if failed else 0


def _build_tiny(directory: Path, seed: int) -> int:
    from agentd.inference import MODEL_FILES, build_tiny_model  # numpy etc. only when asked

    try:
        out = build_tiny_model(directory, seed=seed)
    except OSError as exc:
        print(f"agentd: cannot write the tiny model to {directory}: {exc}", file=sys.stderr)
        return 1
    print(f"tiny model in {out}: {', '.join(MODEL_FILES)}")
    print(f'serve it with [models.tiny] model = "{out}" (see agentd.toml)')
    return 0


def _doctor(config: Config) -> int:
    import os

    from agentd.sandbox._doctor import host_report

    cap = os.environ.get("AGENTD_SANDBOX_MAX_ABI")
    rows, abi = host_report(int(cap) if cap and cap.isdigit() else None)
    for check, ok, detail in rows:
        print(f"{'ok  ' if ok else 'MISS'} {check}: {detail}")
    mode = config.sandbox.mode
    print(f"[sandbox] mode = {mode}, require = {str(config.sandbox.require).lower()}")
    if mode == "off":
        print("agent replicas run UNSANDBOXED ([sandbox].mode = off)")
        return 1
    if abi < 6:
        verdict = "refuses to start" if config.sandbox.require else "runs with what is enforced"
        print(f"agentd {verdict}: Landlock ABI {abi} < 6")
        return 1 if config.sandbox.require else 0
    print("agent replicas: everything above marked ok is enforced")
    return 0


def _check_agents(root: Path, names: list[str]) -> int:
    agents, errors = load_agents(root, names or None)
    for agent in agents:
        print(f"ok   {agent.name} (version {agent.version})")
    for error in errors:
        print(f"FAIL {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
