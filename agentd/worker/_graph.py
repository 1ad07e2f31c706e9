"""Load an agent's graph from its folder: `module:attr` is a compiled graph or a factory."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Protocol

from agentd.errors import SpecError

__all__ = ["Runnable", "load_graph"]


class Runnable(Protocol):
    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any: ...


def load_graph(agent_dir: Path, ref: str, context: object) -> Runnable:
    """Import `ref` ("module:attr") from `agent_dir`.

    `attr` may be a compiled LangGraph graph (anything with `ainvoke`) or a factory that returns
    one; a factory that takes a parameter receives the agent's context.
    """
    module_name, _, attr = ref.partition(":")
    where = f"{agent_dir / 'agent.toml'}"
    if str(agent_dir) not in sys.path:
        sys.path.insert(0, str(agent_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(where, [f"graph: importing {module_name!r} failed: {exc!r}"]) from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise SpecError(where, [f"graph: {module_name!r} has no attribute {attr!r}"]) from None
    if not hasattr(target, "ainvoke") and callable(target):
        params = inspect.signature(target).parameters
        target = target(context) if params else target()
    if not hasattr(target, "ainvoke"):
        raise SpecError(
            where, [f"graph: {ref} is not a compiled graph (no ainvoke) nor a factory of one"]
        )
    graph: Runnable = target
    return graph
