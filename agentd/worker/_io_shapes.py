"""What a run hands its graph, and what it answers: the shapes LangGraph users expect.

In (docs/agents.md, "Inputs and outputs"):
- plain text to a graph with a `messages` channel (MessagesState, `create_react_agent`,
  `langchain.agents.create_agent`) becomes `{"messages": [HumanMessage(text)]}`, and a JSON list
  there becomes its messages;
- a JSON object is the graph's state input, as `graph.invoke(obj)` would take it;
- anything else is refused before the graph runs, with an error naming what the graph takes
  (`InputShapeError`, which the worker dead-letters at once: a retry cannot make it fit).

LangGraph itself accepts much that is wrong without a word: text given to a `dict` state runs
on an empty state, and an object without one of the graph's keys runs the graph on nothing.
Keys the input schema lacks beside ones it has are dropped by LangGraph, as they would be under
`graph.invoke`: agentd refuses only an object that has none of the graph's keys.

Out: a graph whose output state holds messages answers with the content of its last AI
message; `agentctl ask --state` (a message with `whole_state`) gets the whole output state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from agentd.bus import jsonable
from agentd.errors import AgentdError

__all__ = ["GraphInput", "InputShapeError", "graph_input", "run_reply"]

_ROOT = "__root__"  # LangGraph's channel for a state that is the whole value (StateGraph(dict))


class InputShapeError(AgentdError):
    """A message's payload does not fit its agent's graph: no retry can change that."""


@dataclass(frozen=True)
class GraphInput:
    """What a graph's input schema says about the payloads it takes."""

    keys: frozenset[str] | None = None
    """The input state's keys; None when the graph does not say (any payload is passed)."""
    object_root: bool = False
    """The state is one JSON object as a whole (`StateGraph(dict)`)."""
    text: bool = False
    """The input is a string (a functional-API `@entrypoint` taking `str`)."""

    @property
    def messages(self) -> bool:
        return self.keys is not None and "messages" in self.keys

    @classmethod
    def of(cls, graph: object) -> GraphInput:
        """Read the input schema of a compiled StateGraph, else its JSON schema; a graph that
        says nothing about its input gets every payload as it is (as before)."""
        builder = getattr(graph, "builder", None)
        schema = getattr(builder, "input_schema", None)
        channels = getattr(builder, "schemas", {}).get(schema) if schema is not None else None
        if isinstance(channels, Mapping) and channels:
            if _ROOT in channels:
                root = isinstance(schema, type) and issubclass(schema, Mapping)
                return cls(object_root=root)
            return cls(keys=frozenset(str(k) for k in channels))
        try:
            described = graph.get_input_jsonschema()  # type: ignore[attr-defined]
        except Exception:  # not a Runnable, or a schema pydantic cannot build
            return cls()
        if not isinstance(described, Mapping):
            return cls()
        if described.get("type") == "string":
            return cls(text=True)
        properties = described.get("properties")
        if described.get("type") == "object" and isinstance(properties, Mapping) and properties:
            return cls(keys=frozenset(str(k) for k in properties))
        return cls()

    def describe(self) -> str:
        if self.keys is not None:
            keys = ", ".join(sorted(k for k in self.keys if not k.startswith("__")))
            text = "plain text or " if self.messages else ""
            return f"{text}a JSON object with any of the keys {keys}"
        if self.object_root:
            return "a JSON object (its state)"
        return "text" if self.text else "any JSON value"


def graph_input(payload: Any, shape: GraphInput, *, agent: str) -> Any:
    """The input `graph.ainvoke` gets for `payload`; raise InputShapeError when it cannot fit."""
    if shape.messages and isinstance(payload, str):
        from langchain_core.messages import HumanMessage  # a messages graph has langchain-core

        return {"messages": [HumanMessage(payload)]}
    if shape.messages and isinstance(payload, list):
        return {"messages": _messages(payload, agent=agent, shape=shape)}
    if shape.keys is not None or shape.object_root:
        if not isinstance(payload, dict):
            raise InputShapeError(
                f"agent {agent!r} takes {shape.describe()}; the message's payload is "
                f"{_kind(payload)}"
            )
        if shape.keys is not None and payload and not set(payload) & shape.keys:
            raise InputShapeError(
                f"agent {agent!r} takes {shape.describe()}; the payload has none of them "
                f"(it has {', '.join(sorted(map(str, payload))[:10])})"
            )
        if shape.messages and "messages" in payload:
            _messages(payload["messages"], agent=agent, shape=shape)
    return payload


def _messages(value: Any, *, agent: str, shape: GraphInput) -> list[Any]:
    """Check that `value` reads as chat messages before the graph does (a message LangGraph
    cannot convert fails the run in its first node, where the cause is hard to see)."""
    from langchain_core.messages import convert_to_messages

    if not isinstance(value, list):
        raise InputShapeError(
            f"agent {agent!r}: 'messages' must be a list of messages, not {_kind(value)}"
        )
    try:
        return list(convert_to_messages(value))
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputShapeError(
            f"agent {agent!r} takes {shape.describe()}; its messages could not be read: {first}"
        ) from None


def _kind(payload: Any) -> str:
    if payload is None:
        return "empty (null)"
    if isinstance(payload, str):
        return f"text ({payload[:40]!r})"
    return f"a JSON {type(payload).__name__}"


def run_reply(output: Any, *, whole_state: bool) -> JsonValue:
    """What the run answers: the last AI message's content for a graph whose output holds
    messages (the reply a chat user expects), else (or with `whole_state`) the whole output."""
    if not whole_state and isinstance(output, Mapping):
        messages = output.get("messages")
        if isinstance(messages, list) and messages:
            from langchain_core.messages import AIMessage  # present: its objects are here

            for message in reversed(messages):
                if isinstance(message, AIMessage):
                    content = message.content
                    return content if isinstance(content, str) else jsonable(content)
    return jsonable(output)
