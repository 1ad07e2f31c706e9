"""Reload: atomic swap under load, validation first, versions, and the decision cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agentd.policy import DecisionPoint, PolicyError, Request, load_policy, policy_version

GRANT = "p, intake, tool:revocable, call, allow\n"
PROBE = Request("intake", "tool:revocable", "call")


def _write_revision(policy_dir: Path, base: str, seq: int, granted: bool) -> None:
    # Every revision differs (the comment), so every reload has a distinct version.
    text = f"{base}\n# revision {seq}\n" + (GRANT if granted else "")
    (policy_dir / "policy.csv").write_text(text)


def test_reload_race_no_allow_from_a_revoked_rule(policy_dir: Path) -> None:
    base = (policy_dir / "policy.csv").read_text()
    _write_revision(policy_dir, base, 0, granted=True)
    point = DecisionPoint.from_dir(policy_dir)
    state: dict[str, tuple[int, bool]] = {point.version: (0, True)}
    returned = [0]  # the sequence number of the last reload that returned
    stop = threading.Event()
    records: list[list[tuple[int, str, str]]] = [[], []]
    errors: list[BaseException] = []
    other = [
        Request(
            "underwriter",
            "tool:loan.approve",
            "call",
            {"applicant_id": "A-1001", "amount": n, "payee": "acct-1001"},
        )
        for n in (5000, 20000, 60000)
    ]

    def decide_loop(out: list[tuple[int, str, str]]) -> None:
        try:
            i = 0
            while not stop.is_set():
                before = returned[0]
                decision = point.decide(PROBE)
                out.append((before, decision.policy_version, decision.effect))
                point.decide(other[i % 3])  # keep the cache and the index busy too
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=decide_loop, args=(out,)) for out in records]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    rejected = 0
    for seq in range(1, 101):
        granted = seq % 2 == 0
        if seq % 10 == 5:  # a broken revision in between: rejected, the old policy stays
            (policy_dir / "policy.csv").write_text(base + "\np, intake, tool:x, call, maybe\n")
            with pytest.raises(PolicyError):
                point.reload()
            rejected += 1
        _write_revision(policy_dir, base, seq, granted)
        policy = point.reload()
        state[policy.version] = (seq, granted)
        returned[0] = seq
        time.sleep(0.01)  # pace the reloads so decisions interleave with all 100 of them
    elapsed = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "decide() deadlocked"
    assert not errors, errors
    assert rejected == 10
    decisions = [r for out in records for r in out]
    assert len(decisions) / elapsed >= 1000, f"only {len(decisions) / elapsed:.0f} decisions/s"
    seqs_seen = set()
    for before, version, effect in decisions:
        seq, granted = state[version]
        seqs_seen.add(seq)
        # Never a policy older than the last reload that had returned when decide() started,
        # and always the answer of the policy the decision names.
        assert seq >= before, (before, seq)
        assert effect == ("allow" if granted else "deny"), (seq, effect)
    assert len(seqs_seen) >= 50  # decisions really ran across the reloads
    assert point.decide(PROBE).effect == "allow"  # revision 100 grants


def test_a_broken_reload_keeps_the_old_policy(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    old = point.policy
    (policy_dir / "constraints.toml").write_text(
        '[[constraint]]\ntool = "x"\narg = "a"\nmaxx = 3\n'
    )
    with pytest.raises(PolicyError) as caught:
        point.reload()
    assert caught.value.problems == ["constraints.toml:4: unknown field 'maxx' in [[constraint]]"]
    assert point.policy is old
    assert point.decide(Request("intake", "agent:underwriter", "send")).effect == "allow"


def test_version_is_the_hash_of_the_content(policy_dir: Path, tmp_path: Path) -> None:
    first = load_policy(policy_dir)
    assert first.version == policy_version(first.files.read())
    assert len(first.version) == 64
    assert load_policy(policy_dir).version == first.version
    with (policy_dir / "limits.toml").open("a") as f:
        f.write("\n# a comment is content too\n")
    assert load_policy(policy_dir).version != first.version


def test_revoking_a_rule_takes_effect_when_reload_returns(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    request = Request("intake", "agent:underwriter", "send")
    assert point.decide(request).effect == "allow"  # now cached in the old snapshot
    text = (policy_dir / "policy.csv").read_text()
    (policy_dir / "policy.csv").write_text(
        text.replace("p, intake, agent:underwriter, send, allow\n", "")
    )
    new = point.reload()
    decision = point.decide(request)
    assert decision.effect == "deny" and decision.policy_version == new.version


def test_reload_of_unchanged_content_keeps_the_snapshot(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    first = point.decide(Request("echo", "model:main", "infer"))
    assert point.reload() is point.policy
    assert point.decide(Request("echo", "model:main", "infer")) is first


def test_the_cache_answers_repeats_and_stays_bounded(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir, cache_size=10)
    args = {"applicant_id": "A-1001", "amount": 20000, "payee": "acct-1001"}
    first = point.decide(Request("underwriter", "tool:loan.approve", "call", args))
    # Same canonical arguments in another key order: the same cached decision.
    again = point.decide(
        Request("underwriter", "tool:loan.approve", "call", dict(reversed(list(args.items()))))
    )
    assert again is first and first.effect == "approval_required"
    for n in range(50):
        point.decide(Request(f"agent{n}", "model:main", "infer"))
    assert len(point.policy.cache) <= 10


def test_malformed_requests_are_denied_not_raised(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    for request in (
        Request("", "model:main", "infer"),
        Request("echo", "", "infer"),
        Request(["echo"], "model:main", "infer"),  # type: ignore[arg-type]
        Request("intake", "tool:credit.score", "call", {"x": float("nan")}),
        Request("intake", "tool:credit.score", "call", {"x": object()}),
    ):
        decision = point.decide(request)
        assert (decision.effect, decision.rule, decision.stage) == ("deny", "request", "request")
