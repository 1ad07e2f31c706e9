"""Bounded label values: no record can grow a metric without limit.

Every series costs the daemon memory and Prometheus a time series for as long as it exists, so a
label whose values come from outside (an agent asks for a tool that does not exist, names its
own `x.*` record kinds, a refused LLM call names a model) must not mint a series per value.
Each label name (agent, tool, pool, rule, ...) keeps at most `limit` distinct values for
the life of the daemon; a value that would exceed it is counted under `_other` (and logged once
per label), and every value is cut to `MAX_VALUE_CHARS`. Record kinds of `RECORD_KINDS`, effects
and outcomes are the daemon's own, a fixed set, and are exported as they are; extension kinds
(`x.*`, which agents name) and their verdicts are kept apart (`x_kind`, `x_decision`) so that
an agent's inventions can never push the daemon's own values out. The limits bound the rest:
agents and tools by what the fleet and the registry hold, rules by the policy's size, pools by
the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["DEFAULT_LIMITS", "OTHER", "BoundedLabels"]

log = logging.getLogger("agentd.metrics")

OTHER = "_other"
NONE = "-"
MAX_VALUE_CHARS = 128

DEFAULT_LIMITS: Mapping[str, int] = {
    "agent": 1000,
    "tool": 1000,
    "pool": 100,
    "rule": 500,
    "decision": 200,
    "x_kind": 200,
    "x_decision": 200,
}
"""Distinct values kept per label name; names not listed get `FALLBACK_LIMIT`."""
FALLBACK_LIMIT = 100


class BoundedLabels:
    """Maps a label's raw value to the value exported (itself, `-` for none, or `_other`)."""

    def __init__(self, limits: Mapping[str, int] = DEFAULT_LIMITS) -> None:
        self._limits = dict(limits)
        self._seen: dict[str, set[str]] = {}
        self._warned: set[str] = set()

    def __call__(self, name: str, value: object) -> str:
        seen = self._seen.get(name)
        if seen is not None and value in seen:  # the common case: a value seen before
            return value  # narrowed to str: only str values are kept
        return self._first(name, value)

    def _first(self, name: str, value: object) -> str:
        if value is None or value == "":
            return NONE
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_VALUE_CHARS:
            text = text[:MAX_VALUE_CHARS]
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = set()
        if text in seen:
            return text
        if len(seen) >= self._limits.get(name, FALLBACK_LIMIT):
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "metrics: label %r has %d distinct values; new ones are counted as %r",
                    name,
                    len(seen),
                    OTHER,
                )
            return OTHER
        seen.add(text)
        return text

    def count(self, name: str) -> int:
        """Distinct values kept for label `name` so far."""
        return len(self._seen.get(name, ()))
