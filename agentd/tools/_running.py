"""How many tool calls run at once, per agent and per tool: a bound, not a queue.

A call takes a slot before it runs and gives it back when its work has really ended: for a
thread tool, when the function returns (which may be after its timeout, since a thread cannot be
killed), for an isolated tool when its process is gone. A call over a bound is refused at once
(retryable, `rate_limited`) rather than queued behind a thread that may never end, so no agent
can fill the daemon's worker threads or its CPU with calls of a tool policy allows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["RunningCalls", "Slot", "TooManyRunning"]


class TooManyRunning(Exception):
    """A bound is reached; `rule` names the setting that set it."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass
class Slot:
    """One running call's place; `release()` from any thread, once (repeats are ignored)."""

    book: RunningCalls
    agent: str
    tool: str
    released: bool = False

    def release(self) -> None:
        self.book._release(self)


class RunningCalls:
    """Counts of running calls by agent and by tool, under one lock (slots are released from
    worker threads)."""

    def __init__(self, *, per_agent: int, per_tool: int) -> None:
        self.per_agent = per_agent
        self.per_tool = per_tool
        self._by_agent: dict[str, int] = {}
        self._by_tool: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, agent: str, tool: str, *, tool_limit: int | None = None) -> Slot:
        """A slot for `agent` calling `tool`, or `TooManyRunning`. `tool_limit` (the tool's own
        max_running) replaces the per-tool default."""
        limit, rule = (
            (tool_limit, f"{tool}: max_running")
            if tool_limit is not None
            else (self.per_tool, "[tools].max_running_per_tool")
        )
        with self._lock:
            agent_now = self._by_agent.get(agent, 0)
            tool_now = self._by_tool.get(tool, 0)
            if tool_now >= limit:
                raise TooManyRunning(
                    f"{tool_now} calls of {tool} are running, its bound ({rule} = {limit}); "
                    "retry when one has ended",
                    rule,
                )
            if agent_now >= self.per_agent:
                raise TooManyRunning(
                    f"{agent} has {agent_now} tool calls running, its bound "
                    f"([tools].max_running_per_agent = {self.per_agent}); retry when one has "
                    "ended",
                    "[tools].max_running_per_agent",
                )
            self._by_agent[agent] = agent_now + 1
            self._by_tool[tool] = tool_now + 1
        return Slot(self, agent, tool)

    def running(self, *, agent: str | None = None, tool: str | None = None) -> int:
        """Calls running now, of `agent` or of `tool` (all of them with neither)."""
        with self._lock:
            if agent is not None:
                return self._by_agent.get(agent, 0)
            if tool is not None:
                return self._by_tool.get(tool, 0)
            return sum(self._by_tool.values())

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            for counts, key in ((self._by_agent, slot.agent), (self._by_tool, slot.tool)):
                left = counts[key] - 1
                if left:
                    counts[key] = left
                else:
                    del counts[key]
