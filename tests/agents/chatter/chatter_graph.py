"""A graph as the LangChain docs write it: ChatOpenAI built at import, no agentd code."""

from __future__ import annotations

from typing import TypedDict

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph

llm = ChatOpenAI(model="fake", max_retries=0)


class State(TypedDict, total=False):
    question: str
    first: str
    second: str


async def ask_async(state: State) -> State:
    answer = await llm.ainvoke(state.get("question", "hi"))
    return {"first": str(answer.content)}


def ask_sync(state: State) -> State:  # LangGraph runs it in a thread: httpx's sync client
    answer = llm.invoke(state.get("question", "hi"))
    return {"second": str(answer.content)}


builder = StateGraph(State)
builder.add_node("ask_async", ask_async)
builder.add_node("ask_sync", ask_sync)
builder.add_edge(START, "ask_async")
builder.add_edge("ask_async", "ask_sync")
builder.add_edge("ask_sync", END)
graph = builder.compile()
