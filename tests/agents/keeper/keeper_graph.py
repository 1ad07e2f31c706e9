"""Starts one long-lived child per run and answers with its pid and this replica's uid."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

_children: list[subprocess.Popen[bytes]] = []


class Kept(TypedDict, total=False):
    pid: int
    uid: int


def build() -> Any:
    def keep(state: Kept) -> Kept:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        _children.append(child)  # the replica's lifetime: it ends with the process group
        return {"pid": child.pid, "uid": os.getuid()}

    builder = StateGraph(Kept)
    builder.add_node("keep", keep)
    builder.add_edge(START, "keep")
    builder.add_edge("keep", END)
    return builder.compile()
