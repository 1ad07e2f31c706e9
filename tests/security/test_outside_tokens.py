"""Outside LLM-gateway tokens (`agentctl tokens`) attacked the way a client holding one would:
using it on a pool outside its scope, after it expired, under a name a replica agent has, at the
MCP endpoint; and the one-subject promise: an outside client is `ext:<name>` at every door, so
the example policy's `ext:partner-scorer ... infer` grant is what lets it in, and removing it
shuts it out. Each attack has its control: the same call with the protection out of the way
succeeds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from agentd.bus import Subjects
from agentd.config import AgentSpec
from agentd.daemon._mcp_endpoint import token_caller
from agentd.errors import ControlError
from agentd.gateway import TokenBook
from agentd.identity import IdentityBook
from tests.harness import DaemonProcess
from tests.tokens_support import gateway_url, issue, served, tokens_daemon

pytestmark = pytest.mark.integration

PARTNER_GRANT = "p, ext:partner-scorer, model:tiny, infer, allow"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with tokens_daemon(tmp_path_factory.mktemp("outside-tokens")) as d:
        yield d


def error_code(answer: Any) -> str:
    code: str = answer.json()["error"]["code"]
    return code


def test_a_token_for_one_pool_is_refused_on_another(daemon: DaemonProcess) -> None:
    url = gateway_url(daemon)
    # policy lets both ext:narrow and ext:wide use main and tiny (tests/tokens_support.py):
    # only the scope tells them apart
    narrow = issue(daemon, "narrow", "main")["token"]
    assert served(url, narrow, "main").status_code == 200
    attack = served(url, narrow, "tiny")
    assert attack.status_code == 403 and error_code(attack) == "token_scope", attack.text
    # control: the token whose scope includes tiny gets through, with the same policy
    wide = issue(daemon, "wide", "main", "tiny")["token"]
    assert served(url, wide, "tiny").status_code == 200


def test_an_expired_token_is_refused(daemon: DaemonProcess) -> None:
    url = gateway_url(daemon)
    issued = issue(daemon, "brief", "main", ttl="3s")
    # control: before its time is up it is let through (policy allows nothing for ext:brief, so
    # the answer is policy's 403, not the token's 401)
    before = served(url, issued["token"], "main")
    assert before.status_code == 403 and error_code(before) == "policy_denied", before.text
    time.sleep(max(0.0, issued["expires_at"] - time.time()) + 0.2)
    after = served(url, issued["token"], "main")
    assert after.status_code == 401 and error_code(after) == "token_expired", after.text
    assert after.json()["error"]["type"] == "authentication_error"


def test_an_outside_token_named_like_an_agent_gets_none_of_its_grants(
    daemon: DaemonProcess,
) -> None:
    url = gateway_url(daemon)
    # `p, alpha, model:tiny, infer, allow` is a replica's grant; the token `alpha` is ext:alpha
    token = issue(daemon, "alpha", "tiny")["token"]
    attack = served(url, token, "tiny")
    assert attack.status_code == 403 and error_code(attack) == "policy_denied", attack.text
    assert "ext:alpha" in attack.json()["error"]["message"]
    # control: decided on the bare name (the gateway's subject before), policy would allow it
    for subject, effect in (("alpha", "allow"), ("ext:alpha", "deny")):
        out = daemon.agentctl("--json", "policy", "explain", subject, "model:tiny", "infer")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["decision"]["effect"] == effect, out.stdout


def test_the_example_partner_scorer_grant_takes_effect_and_removing_it_denies(
    daemon: DaemonProcess,
) -> None:
    url = gateway_url(daemon)
    policy = daemon.config.parent / "policies" / "policy.csv"
    text = policy.read_text()
    assert PARTNER_GRANT in text  # the example policy's own line
    token = issue(daemon, "partner-scorer", "tiny")["token"]
    granted = served(url, token, "tiny")
    assert granted.status_code == 200, granted.text
    policy.write_text(text.replace(PARTNER_GRANT + "\n", ""))
    try:
        assert daemon.agentctl("policy", "reload").returncode == 0
        denied = served(url, token, "tiny")
        assert denied.status_code == 403 and error_code(denied) == "policy_denied", denied.text
    finally:
        policy.write_text(text)
        assert daemon.agentctl("policy", "reload").returncode == 0
    assert served(url, token, "tiny").status_code == 200


def test_an_outside_token_does_not_open_the_mcp_endpoint() -> None:
    book = TokenBook()
    secret, entry = book.new_outside("partner", ("main",), 3600, "alice")
    book.keep(entry)
    registered = book.issue("partner", "partner@identity", kind="registered")
    caller = token_caller(cast(Any, SimpleNamespace(tokens=book)), None)
    # the gateway accepts it; the MCP endpoint (tools as agent `partner`) does not
    assert book.holder(secret) is not None
    assert caller(secret) is None
    # control: the registered agent's token of the same name is a caller there
    found = caller(registered)
    assert found is not None and found.agent == "partner"


def test_no_agent_or_outside_name_can_carry_a_colon(tmp_path: Path) -> None:
    """`ext:<name>` is only ever made from a name without a colon, and no replica's name has
    one: a replica cannot be an outside client's subject, nor an outside name another's."""
    with pytest.raises(ValidationError, match="name"):
        AgentSpec.model_validate({"name": "ext:partner-scorer", "graph": "graph:graph"})
    book = IdentityBook(tmp_path, Subjects("agentd"), tmp_path / "bootstrap.token")
    with pytest.raises(ControlError, match="lowercase"):
        book.issue_external("ext:partner-scorer")
    with pytest.raises(ControlError, match="lowercase"):
        TokenBook().new_outside("ext:partner-scorer", ("main",), 60, "alice")
    # control: a replica may well be called `ext`; its subject is `ext`, nobody else's
    assert AgentSpec.model_validate({"name": "ext", "graph": "graph:graph"}).name == "ext"
    replicas = TokenBook()
    holder = replicas.holder(replicas.issue("ext", "ext-0"))
    assert holder is not None and holder.subject == "ext"
