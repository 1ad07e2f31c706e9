"""Load an agent's graph: `module:attr` (or `path/file.py:attr` in a LangGraph project) is a
compiled graph or a factory of one.

A factory is called once per replica, at start (a LangGraph Server calls its factories per run;
agentd's replicas keep one graph and its checkpointer for their life). What it is given depends
on its one parameter (docs/agents.md, "Graph factories"):

- none: `build()`;
- a `RunnableConfig` (annotated `RunnableConfig`, or named `config`), as a LangGraph Server
  factory takes it: `{"configurable": {"agent": NAME, "replica": ID, **params}}`, the params an
  agent that spawned this one passed;
- anything else: the `AgentContext` (what agentd factories always got).

The factory may be `async def`, and may be a (sync or async) context manager that yields the
graph, whose exit runs when the replica stops (LangGraph Server allows both, e.g. to open an MCP
session for the graph's life).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from agentd.errors import SpecError

__all__ = ["Runnable", "load_graph", "open_graph"]


class Runnable(Protocol):
    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any: ...


_CONFIG_NAMES = {"RunnableConfig", "langchain_core.runnables.RunnableConfig"}


def load_graph(
    agent_dir: Path, ref: str, context: object, *, project: Path | None = None
) -> Runnable:
    """Import `ref` ("module:attr" importable from `project`, else `agent_dir`, or
    "path/file.py:attr" relative to it) and return its graph, calling a plain factory.
    An `async def` or context-manager factory needs `open_graph`."""
    where = f"{agent_dir / 'agent.toml'}"
    target = _resolve(agent_dir, ref, project, where)
    if hasattr(target, "ainvoke"):
        graph: Runnable = target
        return graph
    if inspect.iscoroutinefunction(target) or _is_context_manager_factory(target):
        raise SpecError(where, [f"graph: {ref} is an async or context-manager factory: open_graph"])
    return _checked(_call_factory(target, context, where), ref, where)


@contextlib.asynccontextmanager
async def open_graph(
    agent_dir: Path, ref: str, context: object, *, project: Path | None = None
) -> AsyncIterator[Runnable]:
    """The agent's graph for the replica's life: built by its factory (awaited, or entered when
    it is a context manager, and exited when this context ends)."""
    where = f"{agent_dir / 'agent.toml'}"
    target = _resolve(agent_dir, ref, project, where)
    if hasattr(target, "ainvoke"):
        yield target
        return
    made = _call_factory(target, context, where)
    if inspect.isawaitable(made):
        made = await made
    if hasattr(made, "__aenter__"):
        async with made as graph:
            yield _checked(graph, ref, where)
        return
    if hasattr(made, "__enter__") and not hasattr(made, "ainvoke"):
        with made as graph:
            yield _checked(graph, ref, where)
        return
    yield _checked(made, ref, where)


def _resolve(agent_dir: Path, ref: str, project: Path | None, where: str) -> Any:
    module = _import(project or agent_dir, ref, where)
    location, _, attr = ref.rpartition(":")
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise SpecError(where, [f"graph: {location!r} has no attribute {attr!r}"]) from None
    if not hasattr(target, "ainvoke") and not callable(target):
        raise SpecError(where, [f"graph: {ref} is not a compiled graph (no ainvoke) nor a factory"])
    return target


def _import(root: Path, ref: str, where: str) -> Any:
    location = ref.rpartition(":")[0]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        if location.endswith(".py"):  # a file, as langgraph.json names graphs
            path = (root / location).resolve()
            name = "agentd_graph_" + "_".join(Path(location).with_suffix("").parts).replace(
                "-", "_"
            ).replace(".", "_")
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pydantic look their module up
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(location)
    except Exception as exc:
        raise SpecError(where, [f"graph: importing {location!r} failed: {exc!r}"]) from exc


def _is_context_manager_factory(target: Any) -> bool:
    wrapped = getattr(target, "__wrapped__", None)
    return wrapped is not None and (
        inspect.isasyncgenfunction(wrapped) or inspect.isgeneratorfunction(wrapped)
    )


def _call_factory(target: Any, context: object, where: str) -> Any:
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # a builtin or a C callable: no parameters to read
        params = []
    required = [p for p in params if p.default is inspect.Parameter.empty]
    if not params:
        return target()
    first = params[0]
    if len(required) > 1:
        names = ", ".join(p.name for p in required)
        raise SpecError(where, [f"graph: the factory takes {names}; it may take at most one"])
    if _wants_config(first):
        return target(_runnable_config(context))
    return target(context)


def _wants_config(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    if isinstance(annotation, str):
        return annotation in _CONFIG_NAMES or annotation.endswith(".RunnableConfig")
    if annotation is not inspect.Parameter.empty:
        return getattr(annotation, "__name__", "") == "RunnableConfig"
    return param.name == "config"


def _runnable_config(context: object) -> dict[str, Any]:
    params = getattr(context, "params", None) or {}
    # the spawner's params, then who this is (which params cannot change)
    configurable = {
        **params,
        "agent": getattr(context, "agent", None),
        "replica": getattr(context, "replica", None),
    }
    return {"configurable": configurable}


def _checked(graph: Any, ref: str, where: str) -> Runnable:
    if not hasattr(graph, "ainvoke"):
        raise SpecError(
            where, [f"graph: {ref} is not a compiled graph (no ainvoke) nor a factory of one"]
        )
    result: Runnable = graph
    return result
