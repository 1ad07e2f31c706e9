"""Errors raised by the decision log."""

from __future__ import annotations

from agentd.errors import AgentdError

__all__ = ["DecisionLogDamaged", "DecisionLogError"]


class DecisionLogError(AgentdError):
    """The decision log cannot do what was asked (closed, unknown record, bad key file...)."""


class DecisionLogDamaged(DecisionLogError):
    """The log's stored state does not verify, so the writer refuses to extend or sign it.

    `seq` is the first record found bad. Run `agentctl audit verify` for the full reason; move the
    file aside to start a new log while the damaged one is examined.
    """

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        self.seq = seq
        super().__init__(message)
