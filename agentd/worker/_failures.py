"""Which failed runs a retry cannot fix: those go to the dead-letter stream at once.

A run is retried in place up to `max_deliver` times because most failures pass (a model server
restarting, a timeout, a lost connection, a bug fixed by a redeploy). Some cannot pass on the same
message and the same code, and retrying them only repeats their side effects and delays the
sender's answer by the backoff: those are dead-lettered on the first failure, with the reason.

- the payload does not fit the graph's input (`InputShapeError`, agentd/worker/_io_shapes.py);
- pydantic validation failed (a state model refusing the input, or a node's own validation):
  the same data fails the same way;
- LangGraph refused a state update (`InvalidUpdateError`: a node returned something that is not
  an update, or two nodes wrote one value in a step) or got no input (`EmptyInputError`): the
  graph's structure decides these, not the moment;
- the run's state cannot be serialised for its checkpoint (raised from LangGraph's serialiser,
  e.g. `TypeError: Type is not msgpack serializable: _thread.lock`): every retry would fail at
  the same checkpoint, after the same side effects.

Anything else (any other `TypeError` or `ValueError` included) still retries: a narrow list,
because dead-lettering a transient failure loses an answer that a retry would have given.
"""

from __future__ import annotations

from types import TracebackType

from pydantic import ValidationError

from agentd.worker._io_shapes import InputShapeError

__all__ = ["permanent_reason"]

_SERIALISER_MODULES = ("langgraph.checkpoint.serde", "ormsgpack", "msgpack")
_CHAIN_DEPTH = 5  # how far down `raise ... from` a reason is looked for


def permanent_reason(exc: BaseException) -> str | None:
    """Why `exc` will fail every retry of the run, or None when a retry may succeed."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        reason = _own_reason(seen)
        if reason is not None:
            return reason
        seen = seen.__cause__  # what raised it on purpose, not what it was handling
    return None


def _own_reason(exc: BaseException) -> str | None:
    if isinstance(exc, InputShapeError):
        return "the message does not fit the graph's input"
    if isinstance(exc, ValidationError):
        return "validation failed"
    try:
        from langgraph.errors import EmptyInputError, InvalidUpdateError
    except ImportError:  # pragma: no cover - langgraph is a dependency
        return None
    if isinstance(exc, InvalidUpdateError):
        return "LangGraph refused the graph's state update"
    if isinstance(exc, EmptyInputError):
        return "the graph got no input"
    if isinstance(exc, (TypeError, ValueError)) and _raised_in(
        exc.__traceback__, _SERIALISER_MODULES
    ):
        return "the run's state cannot be serialised for its checkpoint"
    return None


def _raised_in(tb: TracebackType | None, modules: tuple[str, ...]) -> bool:
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        if name.startswith(modules):
            return True
        tb = tb.tb_next
    return False
