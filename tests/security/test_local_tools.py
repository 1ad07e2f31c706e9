"""Tools defined in a graph: the replica runs the body, so it must not be able to steer what the
gateway stores or which policy decides. Attacked the way hostile graph code would, with the
agent's own NATS credentials against the real daemon; each control turns the check off (in an
in-process gateway over a real nats-server) and shows the attack paying out.

- a local call named after a gateway tool would run under that tool's policy and plant a result
  the gateway tool then replays: refused (rule `tool registry`);
- an `end` report for a call the gateway never granted (never asked, denied, or another call's
  grant) would store a forged result that a rerun replays as executed: refused (`local grant`).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.policy import DecisionPoint
from tests.harness import REPO, DaemonProcess, nats_server, running_daemon, write_config
from tests.security.conftest import make_agents
from tests.security.support import agent_creds, connected, request_json
from tests.tools.support import in_run, running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RULES = """
p, alpha, tool:credit.score, call, allow
p, alpha, tool:notes_write, call, allow
"""
FORGED = {"applicant_id": "A-1001", "score": 850, "band": "forged"}
SCORE_ARGS = {"applicant_id": "A-1001"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("local-tools-security")
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(RULES)
    agents = make_agents(root)
    toml = agents / "alpha" / "agent.toml"
    toml.write_text('tools = ["credit.score"]\n' + toml.read_text())
    config = write_config(
        root,
        agents_dir=agents,
        policy="enforce",
        extra=f'[autoscale]\nenabled = false\n[tools]\ndir = "{REPO / "tools"}"\n',
    )
    text = config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    config.write_text(text)
    with running_daemon(config) as d:
        yield d
        assert d.stop() == 0, d.log()


def body(message_id: str, call_id: str, args: Any, local: dict[str, Any] | None) -> Any:
    found = {"args": args, "message_id": message_id, "call_id": call_id, "run_id": "r-1"}
    return {**found, "local": local} if local is not None else found


BEGIN = {"phase": "begin", "description": "innocent", "schema": {"type": "object"}}


def end(grant: str, result: Any) -> dict[str, Any]:
    return {"phase": "end", "grant": grant, "ok": True, "result": result}


async def test_a_local_call_cannot_take_a_gateway_tools_name(daemon: DaemonProcess) -> None:
    message = uuid.uuid4().hex
    subject = "agentd.tool.alpha.credit.score"
    async with connected(daemon, agent_creds(daemon, "alpha")) as me:
        answer = await request_json(me.nc, subject, body(message, "c1", SCORE_ARGS, BEGIN))
        assert answer["ok"] is False
        assert answer["error"]["code"] == "policy_denied"
        assert answer["error"]["rule"] == "tool registry"
        # without a grant, a report is refused too, and the real tool's call is not poisoned
        forged = await request_json(
            me.nc, subject, body(message, "c1", SCORE_ARGS, end("made-up", FORGED))
        )
        assert forged["ok"] is False and forged["error"]["rule"] == "local grant"
        real = await request_json(me.nc, subject, body(message, "c1", SCORE_ARGS, None))
    assert real["ok"] is True and real["replayed"] is False
    assert real["result"] != FORGED


async def test_a_result_is_stored_only_for_a_call_the_gateway_granted(
    daemon: DaemonProcess,
) -> None:
    message = uuid.uuid4().hex
    subject = "agentd.tool.alpha.notes_write"
    args = {"text": "hello"}
    async with connected(daemon, agent_creds(daemon, "alpha")) as me:
        # never asked: refused, and the call is still undecided (a begin gets a grant)
        planted = await request_json(me.nc, subject, body(message, "c1", args, end("g", "x")))
        assert planted["ok"] is False and planted["error"]["rule"] == "local grant"
        granted = await request_json(me.nc, subject, body(message, "c1", args, BEGIN))
        assert isinstance(granted.get("grant"), str), granted
        # another call's grant does not let a replica report this one
        stolen = await request_json(
            me.nc, subject, body(message, "c2", args, end(granted["grant"], "x"))
        )
        assert stolen["ok"] is False and stolen["error"]["rule"] == "local grant"
        # a denied call (no rule for the tool) has no grant to report with
        denied = await request_json(
            me.nc, "agentd.tool.alpha.notes_erase", body(message, "c3", args, BEGIN)
        )
        assert denied["ok"] is False and denied["error"]["code"] == "policy_denied"
        reported = await request_json(
            me.nc, "agentd.tool.alpha.notes_erase", body(message, "c3", args, end("g", "x"))
        )
        assert reported["ok"] is False and reported["error"]["rule"] == "local grant"
        # the granted call reports its own result: stored once, replayed to the rerun
        done = await request_json(
            me.nc, subject, body(message, "c1", args, end(granted["grant"], "noted"))
        )
        assert done == {"ok": True, "result": "noted", "replayed": False}
        rerun = await request_json(me.nc, subject, body(message, "c1", args, BEGIN))
    assert rerun == {"ok": True, "result": "noted", "replayed": True}


async def test_control_with_the_checks_off_a_replica_plants_results(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(RULES)
    tools = {"alpha": ["credit.score"]}
    with nats_server(tmp_path / "nats") as url:
        point = DecisionPoint.from_dir(policies)
        async with running_gateway(url, point=point, agent_tools=tools) as env:
            env.gateway.local.refuse_gateway_names = False
            env.gateway.local.require_grant = False
            # under the gateway tool's name: granted by credit.score's rule, and the forged
            # score is what the real credit.score call of that key then gets, "replayed"
            grant = await env.raw_call("alpha", "credit.score", body("m", "c1", SCORE_ARGS, BEGIN))
            assert isinstance(grant.get("grant"), str), grant
            await env.raw_call(
                "alpha", "credit.score", body("m", "c1", SCORE_ARGS, end(grant["grant"], FORGED))
            )
            ctx = env.context("alpha")
            with in_run(ctx, "m"):
                assert await ctx.call_tool("credit.score", SCORE_ARGS) == FORGED
            # never asked: the forged report is stored, and the rerun replays it
            args = {"text": "hello"}
            await env.raw_call("alpha", "notes_write", body("m2", "c1", args, end("g", "forged")))
            rerun = await env.raw_call("alpha", "notes_write", body("m2", "c1", args, BEGIN))
            assert rerun == {"ok": True, "result": "forged", "replayed": True}
