"""Who owns an agent's replica count: the autoscaler, or an operator who pinned it.

One rule (docs/architecture.md, "Scaling: who owns the count"): an agent whose spec says
`autoscale = true` (and `[autoscale].enabled`) is the autoscaler's, until an operator scales it
by hand. `agentctl scale NAME N` then pins the count at N: the autoscaler leaves that agent
alone, however idle or busy it gets, until `agentctl autoscale NAME on` hands the count back
(`agentctl autoscale NAME off` pins it at what it runs now, without scaling). Both are
`agent.autoscale` decisions naming the operator, and `agentctl ps` shows the owner (SCALED BY):
`autoscaler`, `pinned:<operator>`, or `operator` for an agent the autoscaler never manages.

Why pin rather than refuse or move the bounds: an operator scaling by hand during an incident
means "this many, now", and must not be undone a second later; refusing would make them turn
the autoscaler off first anyway, and changing replicas.min/max would rewrite the spec's intent
behind its back. A pin lasts while the daemon runs: a restarted daemon starts every agent at
`replicas.initial` under its spec's owner again, and says so in `ps`. In a cluster the pin
lives on the host that took the command; the placer's autoscaler reads its own hosts' pins
(operators scale through one host, usually the placer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentd.config import AutoscaleConfig
from agentd.errors import ControlError

if TYPE_CHECKING:
    from agentd.daemon._fleet import AgentRecord
    from agentd.daemon._recorder import Recorder

__all__ = ["count_owner", "is_autoscaled", "pin_count", "record_pin", "release_count"]


def is_autoscaled(record: AgentRecord, cfg: AutoscaleConfig) -> bool:
    """The autoscaler may change this agent's count (its spec and the config allow it, and no
    operator pinned it)."""
    return cfg.enabled and record.agent.spec.autoscale and record.pinned_by is None


def count_owner(record: AgentRecord, cfg: AutoscaleConfig) -> str:
    """What `agentctl ps` shows as SCALED BY."""
    if record.pinned_by is not None:
        return f"pinned:{record.pinned_by}"
    return "autoscaler" if is_autoscaled(record, cfg) else "operator"


def pin_count(record: AgentRecord, cfg: AutoscaleConfig, *, operator: str) -> bool:
    """Take the count away from the autoscaler (before an operator's scale, so that a tick
    already under way sees the pin before it scales). False where the autoscaler did not own
    it; `unpin` undoes it if the operator's scale then fails, `record_pin` records it."""
    if not is_autoscaled(record, cfg):
        return False
    record.pinned_by = operator
    return True


def record_pin(record: AgentRecord, recorder: Recorder | None, *, operator: str, why: str) -> None:
    """The `agent.autoscale` decision "off" of a pin that took effect."""
    if recorder is not None:
        recorder.record(
            "agent.autoscale",
            agent=record.name,
            decision="off",
            reason=f"{why}: the count stays until `agentctl autoscale {record.name} on`",
            attributes={"operator": operator, "replicas": len(record.replicas)},
            lineage={"agent_version": record.agent.version},
        )


def release_count(
    record: AgentRecord, cfg: AutoscaleConfig, recorder: Recorder | None, *, operator: str
) -> None:
    """Hand the count back to the autoscaler (`agentctl autoscale NAME on`)."""
    if not (cfg.enabled and record.agent.spec.autoscale):
        where = (
            "[autoscale].enabled = false in the config"
            if not cfg.enabled
            else f"its spec says autoscale = false ({record.agent.spec_path})"
        )
        raise ControlError(
            "not_autoscaled",
            f"the autoscaler does not manage {record.name}: {where}; "
            f"`agentctl scale {record.name} N` sets its count",
        )
    was, record.pinned_by = record.pinned_by, None
    if recorder is not None:
        recorder.record(
            "agent.autoscale",
            agent=record.name,
            decision="on",
            reason=(
                f"operator {operator} handed the count back to the autoscaler"
                + (f" (pinned by {was})" if was else " (it had it already)")
            ),
            attributes={"operator": operator, "replicas": len(record.replicas)},
            lineage={"agent_version": record.agent.version},
        )
