"""`agentctl tokens` against a real daemon: an operator issues a scoped, expiring LLM-gateway
token for an outside client, the official openai SDK uses it as any client would
(OPENAI_BASE_URL / OPENAI_API_KEY), `list` never shows a secret, `revoke` refuses it at the
gateway at once, bad input gets clear errors, only roles that may act do, every change is
recorded (never the secret), and tokens survive a daemon restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.harness import DaemonProcess, decision_records, records_when, running_daemon
from tests.tokens_support import gateway_url, issue, served, tokens_daemon

pytestmark = pytest.mark.integration

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with tokens_daemon(tmp_path_factory.mktemp("tokens")) as d:
        yield d


def sdk(url: str, token: str) -> OpenAI:
    """The official client as an outside program would make it: base URL and key only."""
    return OpenAI(base_url=url, api_key=token, max_retries=0)


def test_an_issued_token_works_in_the_openai_sdk_and_revoking_it_refuses_it_at_once(
    daemon: DaemonProcess,
) -> None:
    url = gateway_url(daemon)
    issued = issue(daemon, "scorer", "main", ttl="30d")
    token = issued["token"]
    assert issued["subject"] == "ext:scorer" and issued["pools"] == ["main"]
    assert issued["issued_by"] == "local" and issued["state"] == "active"
    assert 29.9 * 86400 < issued["expires_at"] - time.time() <= 30 * 86400
    assert "warning" not in issued  # policy grants ext:scorer main (tests/tokens_support.py)
    assert served(url, token, "main").status_code == 200
    with sdk(url, token) as client:
        reply = client.chat.completions.create(model="main", messages=CHAT, max_tokens=1)
        assert reply.choices[0].message.content == "x"
        assert [m.id for m in client.models.list().data] == ["main"]
        # the scope: pool B with a token for pool A is a 403 the SDK raises as its own class
        with pytest.raises(openai.PermissionDeniedError) as scoped:
            client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=1)
        assert scoped.value.code == "token_scope"
        out = daemon.agentctl("tokens", "revoke", "scorer")
        assert out.returncode == 0 and "revoked token scorer" in out.stdout, out.stderr
        started = time.monotonic()
        with pytest.raises(openai.AuthenticationError) as revoked:
            client.chat.completions.create(model="main", messages=CHAT, max_tokens=1)
        assert time.monotonic() - started < 1.0
        assert revoked.value.code == "token_revoked" and "local" in revoked.value.message
    # recorded: who issued and revoked what, never the secret
    issued_records = records_when(daemon.state_dir, "token.issued", bool)
    revoked_records = records_when(daemon.state_dir, "token.revoked", bool)
    assert issued_records[-1]["operator"] == "local"
    assert issued_records[-1]["inputs"] == {"name": "scorer", "pools": ["main"], "ttl": "30d"}
    assert issued_records[-1]["attributes"]["subject"] == "ext:scorer"
    assert revoked_records[-1]["operator"] == "local"
    commands = [r["decision"] for r in decision_records(daemon.state_dir, "control.command")]
    assert {"tokens.issue", "tokens.revoke"} <= set(commands)
    calls = [
        r
        for r in decision_records(daemon.state_dir, "llm.call")
        if r.get("attributes", {}).get("subject") == "ext:scorer"
    ]
    assert {r["decision"] for r in calls} >= {"ok", "token_scope"}
    assert token.encode() not in (daemon.state_dir / "decisions.db").read_bytes()
    assert token not in daemon.log()


def test_list_shows_who_what_and_until_when_but_never_a_secret(daemon: DaemonProcess) -> None:
    token = issue(daemon, "lister", "main", "tiny", ttl="12h")["token"]
    table = daemon.agentctl("tokens", "list")
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if row.startswith("lister "))
    assert "ext:lister" in line and "main,tiny" in line and "local" in line and "active" in line
    rows = json.loads(daemon.agentctl("tokens", "list", "--json").stdout)
    row = next(r for r in rows if r["name"] == "lister")
    assert set(row) == {
        "name", "subject", "pools", "issued_at", "expires_at", "issued_by", "state",
        "revoked_at", "revoked_by",
    }  # fmt: skip
    assert token not in table.stdout and token not in json.dumps(rows)
    # the default subcommand is list
    assert "lister" in daemon.agentctl("tokens").stdout


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["x1", "--pool", "main", "--ttl", "30x"], "bad_request", "is not a duration"),
        (["x2", "--pool", "main", "--ttl", "0d"], "bad_request", "longer than zero"),
        (["x3", "--pool", "main", "--ttl", "900d"], "bad_request", "longer than a token may live"),
        (["x4", "--pool", "nope", "--ttl", "1d"], "unknown_pool", "the pools are main, tiny"),
        (["Bad:Name", "--pool", "main", "--ttl", "1d"], "bad_request", "lowercase letters"),
    ],
)
def test_bad_input_is_refused_saying_what_and_where(
    daemon: DaemonProcess, args: list[str], code: str, says: str
) -> None:
    out = daemon.agentctl("tokens", "issue", *args)
    assert out.returncode == 1, out.stdout
    assert f"[{code}]" in out.stderr and says in out.stderr, out.stderr


def test_a_duplicate_name_an_unknown_token_and_a_missing_flag(daemon: DaemonProcess) -> None:
    issue(daemon, "twice", "main")
    again = daemon.agentctl("tokens", "issue", "twice", "--pool", "main", "--ttl", "1d")
    assert again.returncode == 1 and "[name_taken]" in again.stderr, again.stderr
    assert "revoke it first" in again.stderr
    unknown = daemon.agentctl("tokens", "revoke", "nobody")
    assert unknown.returncode == 1 and "[unknown_token]" in unknown.stderr
    missing = daemon.agentctl("tokens", "issue", "x5", "--ttl", "1d")
    assert missing.returncode == 2 and "--pool" in missing.stderr  # argparse: usage error
    # a pool policy does not grant: issued, with a warning naming the line to add
    warned = daemon.agentctl("tokens", "issue", "ungranted", "--pool", "tiny", "--ttl", "1d")
    assert warned.returncode == 0, warned.stderr
    assert "p, ext:ungranted, model:tiny, infer, allow" in warned.stderr


def test_only_operators_whose_role_may_act_issue_and_revoke(daemon: DaemonProcess) -> None:
    # carol is a viewer (policies/policy.csv): she may list, not issue or revoke
    listed = daemon.agentctl("--operator", "carol", "tokens", "list")
    assert listed.returncode == 0, listed.stderr
    issue(daemon, "guarded", "main")
    for args in (["issue", "carol-own", "--pool", "main", "--ttl", "1d"], ["revoke", "guarded"]):
        out = daemon.agentctl("--operator", "carol", "tokens", *args)
        assert out.returncode == 1 and "[forbidden]" in out.stderr, out.stderr
    # bob is an operator: acting on agents, not minting credentials (ctl:* is admins')
    bob = daemon.agentctl("--operator", "bob", "tokens", "revoke", "guarded")
    assert bob.returncode == 1 and "[forbidden]" in bob.stderr
    rows = json.loads(daemon.agentctl("tokens", "list", "--json").stdout)
    assert {r["name"]: r["state"] for r in rows}["guarded"] == "active"
    denied = [
        r
        for r in decision_records(daemon.state_dir, "control.command")
        if r["decision"] == "denied" and r.get("operator") in ("carol", "bob")
    ]
    assert {r["attributes"]["verb"] for r in denied} >= {"tokens.issue", "tokens.revoke"}


def test_tokens_survive_a_restart(daemon: DaemonProcess, tmp_path: Path) -> None:
    kept = issue(daemon, "survivor", "main")["token"]
    gone = issue(daemon, "goner", "main")["token"]
    assert daemon.agentctl("tokens", "revoke", "goner").returncode == 0
    assert daemon.stop() == 0, daemon.log()
    with running_daemon(daemon.config) as again:
        url = gateway_url(again)
        assert served(url, kept, "main").status_code != 401  # known after the restart
        with sdk(url, gone) as client, pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="main", messages=CHAT, max_tokens=1)
        assert refused.value.code == "token_revoked"
        rows = json.loads(again.agentctl("tokens", "list", "--json").stdout)
        states = {r["name"]: r["state"] for r in rows}
        assert states["survivor"] == "active" and states["goner"] == "revoked"
        assert again.stop() == 0, again.log()
