"""Running the caller's probes: each run ends in None (healthy) or a description of the problem."""

from __future__ import annotations

import anyio

from agentd.supervisor._spec import ChildInfo, LivenessProbe, Probe

__all__ = ["liveness_problem", "ready_problem"]


async def ready_problem(probe: Probe, info: ChildInfo, *, timeout_s: float) -> str | None:
    """Run a ready probe; None once it returns, else why the child is not ready."""
    with anyio.move_on_after(timeout_s):
        try:
            await probe(info)
        except Exception as exc:
            return f"failed its ready probe ({_describe_error(exc)})"
        return None
    return f"did not pass its ready probe within {timeout_s:g}s"


async def liveness_problem(
    probe: LivenessProbe, info: ChildInfo, *, timeout_s: float
) -> str | None:
    """Run a liveness probe; None if it said alive in time, else what went wrong."""
    with anyio.move_on_after(timeout_s):
        try:
            alive = await probe(info)
        except Exception as exc:
            return f"probe raised {_describe_error(exc)}"
        return None if alive else "probe returned False"
    return f"probe timed out after {timeout_s:g}s"


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
