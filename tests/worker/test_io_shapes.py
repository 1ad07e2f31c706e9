"""Inputs and outputs as LangGraph users expect them, checked on real LangGraph graphs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import InvalidUpdateError
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from agentd.errors import SpecError
from agentd.worker._failures import permanent_reason
from agentd.worker._graph import load_graph, open_graph
from agentd.worker._io_shapes import GraphInput, InputShapeError, graph_input, run_reply

pytestmark = pytest.mark.anyio


class Question(TypedDict, total=False):
    question: str
    answer: str


class Strict(BaseModel):
    question: str


def _graph(schema: Any, node: Any = None, checkpointer: Any = None) -> Any:
    builder = StateGraph(schema)
    builder.add_node("n", node or (lambda state: {}))
    builder.add_edge(START, "n")
    builder.add_edge("n", END)
    return builder.compile(checkpointer=checkpointer)


def _reply(state: MessagesState) -> dict[str, Any]:
    return {"messages": [AIMessage(f"you said {state['messages'][-1].content}")]}


async def test_plain_text_reaches_a_messages_graph_as_one_human_message() -> None:
    graph = _graph(MessagesState, _reply)
    shape = GraphInput.of(graph)
    assert shape.messages
    state = await graph.ainvoke(graph_input("hello", shape, agent="chat"))
    assert [type(m) for m in state["messages"]] == [HumanMessage, AIMessage]
    assert run_reply(state, whole_state=False) == "you said hello"
    whole: Any = run_reply(state, whole_state=True)
    assert [m["type"] for m in whole["messages"]] == ["human", "ai"]


async def test_a_json_list_is_a_messages_graphs_messages_and_a_bad_one_is_refused() -> None:
    graph = _graph(MessagesState, _reply)
    shape = GraphInput.of(graph)
    given = graph_input([{"role": "user", "content": "hi"}], shape, agent="chat")
    assert run_reply(await graph.ainvoke(given), whole_state=False) == "you said hi"
    with pytest.raises(InputShapeError, match="its messages could not be read"):
        graph_input({"messages": [{"role": "nobody", "content": "x"}]}, shape, agent="chat")
    with pytest.raises(InputShapeError, match="'messages' must be a list"):
        graph_input({"messages": 5}, shape, agent="chat")


def test_an_object_is_the_state_input_and_a_wrong_shape_names_what_the_graph_takes() -> None:
    for schema in (Question, Strict):
        shape = GraphInput.of(_graph(schema))
        assert graph_input({"question": "q"}, shape, agent="qa") == {"question": "q"}
        with pytest.raises(InputShapeError) as wrong:
            graph_input({"text": "q"}, shape, agent="qa")
        assert "agent 'qa' takes a JSON object with any of the keys" in str(wrong.value)
        assert "question" in str(wrong.value) and "it has text" in str(wrong.value)
        with pytest.raises(InputShapeError, match="the message's payload is text"):
            graph_input("what is it?", shape, agent="qa")
    messages = GraphInput.of(_graph(MessagesState))
    with pytest.raises(InputShapeError, match="plain text or a JSON object with any of the keys"):
        graph_input({"message": "hi"}, messages, agent="chat")
    with pytest.raises(InputShapeError, match=r"empty \(null\)"):
        graph_input(None, messages, agent="chat")


def test_a_dict_state_takes_objects_only_and_an_unknown_graph_takes_anything() -> None:
    shape = GraphInput.of(_graph(dict))
    assert shape.object_root and graph_input({"any": 1}, shape, agent="echo") == {"any": 1}
    with pytest.raises(InputShapeError, match="takes a JSON object"):
        graph_input("hi", shape, agent="echo")  # LangGraph would run it on an empty state
    opaque = GraphInput.of(object())
    assert opaque == GraphInput() and graph_input("hi", opaque, agent="x") == "hi"


def test_a_graph_without_messages_replies_with_its_state() -> None:
    assert run_reply({"answer": 42}, whole_state=False) == {"answer": 42}
    no_ai = {"messages": [HumanMessage("only me")]}
    reply: Any = run_reply(no_ai, whole_state=False)
    assert reply["messages"][0]["content"] == "only me"


async def test_errors_no_retry_can_fix_are_told_from_transient_ones() -> None:
    shape = GraphInput.of(_graph(Question))
    with pytest.raises(InputShapeError) as shape_error:
        graph_input("x", shape, agent="qa")
    assert permanent_reason(shape_error.value) == "the message does not fit the graph's input"
    with pytest.raises(Exception) as invalid:
        await _graph(Strict).ainvoke({"question": 5})
    assert permanent_reason(invalid.value) == "validation failed"
    with pytest.raises(InvalidUpdateError) as update:
        await _graph(Question, lambda s: ["not", "an", "update"]).ainvoke({"question": "q"})
    assert permanent_reason(update.value) == "LangGraph refused the graph's state update"
    unserialisable = _graph(dict, lambda s: {"lock": threading.Lock()}, InMemorySaver())
    with pytest.raises(TypeError) as serialise:
        await unserialisable.ainvoke({"a": 1}, {"configurable": {"thread_id": "t"}})
    assert "cannot be serialised" in str(permanent_reason(serialise.value))
    # the same kinds of error raised by the graph's own code still retry
    assert permanent_reason(TypeError("unsupported operand")) is None
    assert permanent_reason(ValueError("the model server is restarting")) is None
    assert permanent_reason(ConnectionError("reset")) is None
    assert permanent_reason(TimeoutError()) is None
    wrapped = RuntimeError("node failed")
    wrapped.__cause__ = shape_error.value
    assert permanent_reason(wrapped) is not None


FACTORIES = """
import contextlib
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

EVENTS = []

def _build(tag):
    builder = StateGraph(dict)
    builder.add_node("n", lambda state: {**state, "tag": tag})
    builder.add_edge(START, "n")
    builder.add_edge("n", END)
    return builder.compile()

graph = _build("compiled")

def plain():
    return _build("plain")

def with_context(ctx):
    return _build(f"context {ctx.agent}")

def server_style(config: RunnableConfig):
    return _build(f"config {config['configurable']['agent']} {config['configurable']['words']}")

def named_config(config):
    return _build(f"named {config['configurable']['replica']}")

async def async_factory(config: RunnableConfig):
    return _build("async")

@contextlib.asynccontextmanager
async def managed(config: RunnableConfig):
    EVENTS.append("enter")
    yield _build("managed")
    EVENTS.append("exit")

def two(a, b):
    return _build("never")
"""


class Ctx:
    agent = "bot"
    replica = "bot-0"
    params = {"words": 3}


async def test_graph_factories_plain_agentd_and_langgraph_server_style(tmp_path: Path) -> None:
    (tmp_path / "factories.py").write_text(FACTORIES)
    expected = {
        "graph": "compiled",
        "plain": "plain",
        "with_context": "context bot",
        "server_style": "config bot 3",
        "named_config": "named bot-0",
        "async_factory": "async",
        "managed": "managed",
    }
    for attr, tag in expected.items():
        async with open_graph(tmp_path, f"factories:{attr}", Ctx()) as graph:
            assert (await graph.ainvoke({}))["tag"] == tag, attr
    import factories  # type: ignore[import-not-found]

    assert factories.EVENTS == ["enter", "exit"]  # the context manager lives with the graph
    assert (await load_graph(tmp_path, "factories:server_style", Ctx()).ainvoke({}))["tag"]
    with pytest.raises(SpecError, match="async or context-manager factory"):
        load_graph(tmp_path, "factories:async_factory", Ctx())
    with pytest.raises(SpecError, match="the factory takes a, b; it may take at most one"):
        async with open_graph(tmp_path, "factories:two", Ctx()):
            pass


def test_whole_state_travels_only_when_asked_for() -> None:
    """Left out unless set, so replicas from before the field still read every message."""
    from agentd.bus import Message

    plain = Message.model_validate({"from": "operator:local", "to": "chat", "payload": "hi"})
    assert b"whole_state" not in plain.to_json()
    asked = plain.model_copy(update={"whole_state": True})
    assert Message.model_validate_json(asked.to_json()).whole_state is True
    assert Message.model_validate_json(plain.to_json()).whole_state is False
