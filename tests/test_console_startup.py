"""The console's startup: what `agentctl` imports before it knows its verb, the global flags on
every subcommand, and bench/console.py in smoke mode (the figures themselves are the bench's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.audit import RUN_STATUSES
from agentd.cli._log_args import RUN_STATUSES as PARSED_RUN_STATUSES
from agentd.cli.agentctl import _parser
from tests.harness import REPO, running_daemon, write_config

# what a verb pays for only when it runs: NATS, the config models, the decision log's code
HEAVY = ("nats", "pydantic", "aiohttp", "anyio", "agentd.config", "agentd.audit", "agentd.trace")
# what status, ps and send never need (the daemon's side of agentd, and anyio's event-loop
# backend: agentctl runs on asyncio); nats-py and the light parts of agentd.bus, agentd.control
# and agentd.identity are all they import
NEVER_FOR_STATUS_PS_SEND = (
    "pydantic",
    "casbin",
    "langgraph",
    "langchain_core",
    "opentelemetry",
    "httpx",
    "cryptography",
    "aiohttp.client",
    "anyio._backends",
    "agentd.config",
    "agentd.audit",
    "agentd.trace",
    "agentd.policy",
)


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint([m for m in sys.modules if m.startswith({HEAVY!r})])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    imported: list[str] = eval(out.stdout.strip().splitlines()[-1])  # a list literal we printed
    return imported


def test_parsing_the_command_line_imports_nothing_heavy() -> None:
    assert _imported_after("import agentd.cli.agentctl as c; c._parser().parse_args(['ps'])") == []


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import contextlib, io\nimport agentd.cli.agentctl as c\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    c.main(['--help'])"
    )
    assert _imported_after(code) == []


def test_the_parser_spells_the_run_statuses_the_log_knows() -> None:
    assert PARSED_RUN_STATUSES == RUN_STATUSES


@pytest.mark.parametrize(
    "argv",
    [
        ["ps", "--json"],
        ["dlq", "list", "--json", "--timeout", "9"],
        ["policy", "explain", "a", "ctl:ps", "ps", "--json"],
        ["audit", "verify", "--json", "--config", "x.toml"],
        ["runs", "--status", "dead", "--json", "--operator", "alice"],
        ["autoscale", "echo", "on", "--json"],
    ],
)
def test_every_subcommand_takes_the_global_flags(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert args.json is True
    assert args.timeout == (9.0 if "--timeout" in argv else 5.0)
    assert args.config == ("x.toml" if "--config" in argv else None)


def test_a_flag_after_the_verb_wins_and_one_before_stays_when_not_repeated() -> None:
    args = _parser().parse_args(["--timeout", "2", "--json", "ps", "--timeout", "7"])
    assert (args.timeout, args.json) == (7.0, True)
    # a subcommand's own option keeps its meaning (dlq list --limit is dlq's)
    assert _parser().parse_args(["dlq", "list", "--limit", "3"]).limit == 3


@pytest.mark.integration
def test_ps_against_a_daemon_leaves_out_the_websocket_transport_and_the_log(
    tmp_path: object,
) -> None:

    assert isinstance(tmp_path, Path)
    with running_daemon(write_config(tmp_path)) as daemon:
        out = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "agentd.cli.agentctl",
                "--url",
                daemon.url,
                "--config",
                str(daemon.config),
                "ps",
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)[0]["agent"] == "echo"
        modules = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
        assert "nats.aio.client" in modules  # the probe sees imports at all
        # (`aiohttp` itself shows up: nats-py tries it, and finds none)
        assert not {"aiohttp.client", "agentd.audit", "agentd.trace"} & modules
        assert daemon.stop() == 0


@pytest.mark.integration
def test_status_ps_and_send_import_none_of_the_daemons_heavy_modules(tmp_path: Path) -> None:
    """One process runs `agentctl status`, `ps` and `send` against a real daemon, then lists
    what it has imported: none of pydantic, casbin, LangGraph, OpenTelemetry, httpx, the config
    models (bench/console.py times what this keeps out)."""
    with running_daemon(write_config(tmp_path)) as daemon:
        where = ["--url", daemon.url, "--config", str(daemon.config), "--json"]
        runs = [[*where, "status"], [*where, "ps"], [*where, "send", "echo", '{"text": "hi"}']]
        probe = (
            "import json, sys\nimport agentd.cli.agentctl as c\n"
            f"codes = [c.main(argv) for argv in {runs!r}]\n"
            "print(json.dumps({'codes': codes, 'modules': sorted(sys.modules)}))"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        *answers, last = out.stdout.strip().splitlines()
        found = json.loads(last)
        assert found["codes"] == [0, 0, 0], out.stderr
        assert "message_id" in "".join(answers)  # send was accepted
        modules: list[str] = found["modules"]
        assert "nats.aio.client" in modules and "agentd.bus" in modules  # it did speak NATS
        loaded = [m for m in modules if m.startswith(NEVER_FOR_STATUS_PS_SEND)]
        assert loaded == [], f"agentctl status/ps/send imported {loaded}"
        assert daemon.stop() == 0


@pytest.mark.integration
def test_the_console_bench_runs_in_smoke_mode() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "console.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result["this"]) == {"--help", "status", "ps", "send"}
    for figures in result["this"].values():
        assert figures["wall_ms"] > 0 and figures["cpu_ms"] > 0
        assert figures["cpu_vs_raw_request"] > 0
    assert result["baselines"]["python -c pass"]["wall_ms"] > 0
    assert result["baselines"]["raw nats-py request"]["cpu_ms"] > 0
