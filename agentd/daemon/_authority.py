"""The daemon's side of policy: one decision point shared by every enforcement point it runs.

`[policy].mode = "enforce"` loads policies/ at startup (a broken policy stops the start with
file:line: reason); `"off"` allows everything and says so in every decision's rule. Reloads
(SIGHUP, `agentctl policy reload`) validate first and keep the old policy when the new one is
broken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from agentd.config import PolicyConfig
from agentd.errors import ConfigError, ControlError
from agentd.policy import DecisionPoint, Request, run_golden_tables
from agentd.router import HookDecision

__all__ = ["Authority"]

log = logging.getLogger("agentd.policy")

OFF_RULE = "policy off ([policy].mode)"


class Authority:
    def __init__(self, cfg: PolicyConfig) -> None:
        self.cfg = cfg
        self.record: Callable[..., None] | None = None  # the daemon's recorder, once it runs
        self.point: DecisionPoint | None = (
            DecisionPoint.from_dir(cfg.dir) if cfg.mode == "enforce" else None
        )

    @property
    def version(self) -> str:
        return self.point.version if self.point else "off"

    def check(
        self, subject: str, obj: str, action: str, args: dict[str, Any] | None = None
    ) -> HookDecision:
        """The router's policy hook (and any other yes/no question)."""
        if self.point is None:
            return HookDecision(True, rule=OFF_RULE, policy_version="off")
        decision = self.point.decide(Request(subject, obj, action, args))
        return HookDecision(
            decision.effect == "allow", decision.rule, decision.reason, decision.policy_version
        )

    def roles_of(self, subject: str) -> tuple[str, ...]:
        """The roles policy.csv gives `subject`, directly or through other roles."""
        if self.point is None:
            return ()
        return tuple(s for s in self.point.policy.access.subjects_of(subject) if s != subject)

    def refuse_verb(self, operator: str, verb: str, answer: HookDecision, reason: str) -> NoReturn:
        """Record and raise a refusal of control verb `verb` (by policy.csv or outside it)."""
        if self.record is not None:
            self.record(
                "control.command",
                operator=operator,
                decision="denied",
                rule=answer.rule,
                reason=reason,
                verb=verb,
                lineage={"policy_version": answer.policy_version},
            )
        raise ControlError(
            "forbidden",
            f"operator {operator!r} may not use {verb!r}: {reason}",
            rule=answer.rule,
            policy_version=answer.policy_version,
        )

    def authorize_verb(self, operator: str, verb: str) -> HookDecision:
        """May `operator` use control verb `verb`? Raises ControlError("forbidden") if not."""
        answer = self.check(f"operator:{operator}", f"ctl:{verb}", verb)
        if not answer.allowed:
            self.refuse_verb(operator, verb, answer, answer.reason or "denied")
        return answer

    def record_command(self, operator: str, verb: str, args: dict[str, Any], **fields: Any) -> None:
        """Record a control command that policy let through, with the rule that allowed it (the
        decision point memoises the answer: asking again is cheap)."""
        if self.record is None:
            return
        answer = self.check(f"operator:{operator}", f"ctl:{verb}", verb)
        self.record(
            "control.command",
            operator=operator,
            decision=verb,
            rule=answer.rule,
            inputs=dict(args),
            lineage={"policy_version": answer.policy_version},
            **fields,
        )

    def reload(self, *, operator: str | None = None) -> dict[str, Any]:
        """Validate and swap in the policy on disk. A broken one raises PolicyError (file:line:
        reason) and the running policy stays; either way the attempt is recorded."""
        if self.point is None:
            return {"mode": "off", "version": "off", "changed": False}
        before = self.point.version
        try:
            policy = self.point.reload(self.cfg.dir)
        except ConfigError as exc:
            self._record_reload(operator, "rejected", before, reason=str(exc))
            raise
        changed = policy.version != before
        log.info("policy %s (was %s)", policy.version[:12], before[:12])
        self._record_reload(
            operator, "reloaded" if changed else "unchanged", policy.version, previous=before
        )
        return {"mode": "enforce", "version": policy.version, "changed": changed}

    def _record_reload(
        self, operator: str | None, decision: str, version: str, **fields: Any
    ) -> None:
        if self.record is not None:
            self.record(
                "policy.reloaded",
                operator=operator,
                decision=decision,
                lineage={"policy_version": version},
                **fields,
            )

    def test(self, directory: Path | None = None) -> dict[str, Any]:
        """Run the golden decision tables (policies/tests/*.toml) against the live policy."""
        if self.point is None:
            raise ControlError("policy_off", "policy is off ([policy].mode); nothing to test")
        report = run_golden_tables(directory or self.cfg.dir / "tests", self.point)
        return {
            "ok": report.ok,
            "policy_version": report.policy_version,
            "cases": len(report.results),
            "failures": [r.describe() for r in report.failures],
            "report": report.render(),
        }

    def explain(
        self,
        subject: str,
        obj: str,
        action: str,
        args: dict[str, Any] | None,
        *,
        tainted: bool = False,
    ) -> dict[str, Any]:
        if self.point is None:
            raise ControlError("policy_off", "policy is off ([policy].mode): everything is allowed")
        explanation = self.point.explain(subject, obj, action, args, tainted=tainted)
        return {"decision": explanation.decision.to_dict(), "text": explanation.render()}
