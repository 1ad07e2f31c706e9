"""Every attempt a hostile replica would make against its host, in-process and in a child.

The message names what the test set up: `other_pid` (another agent's replica, whose
environment holds its credentials), `daemon_pid`, `forbidden_port` (a TCP listener nobody was
given), `allowed_port` (one this agent may have been given). The answer maps each attempt to
"allowed" or "denied: <the error>", for the graph and for its child process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

log = logging.getLogger("hostile")

# runs in the graph and, as source, in a child process (which inherits the sandbox)
ATTEMPTS = r"""
import os, signal, socket

def attempts(state_dir, other_agent, other_pid, daemon_pid, forbidden_port, allowed_port):
    def read(path):
        with open(path, "rb") as f:
            f.read(16)

    def open_for_writing(path):  # opening is the attempt: nothing is written
        os.close(os.open(path, os.O_WRONLY))

    def connect(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass

    def bind():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()

    def daemon_environment():
        with open(f"/proc/{daemon_pid}/environ", "rb") as f:
            f.read(16)

    def raw_socket():  # around the TCP rules: needs CAP_NET_RAW
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()

    def other_environment():
        with open(f"/proc/{other_pid}/environ", "rb") as f:
            found = [e for e in f.read().split(b"\0") if e.startswith(b"AGENTD_CREDS_JSON=")]
            if not found or found[0] == b"AGENTD_CREDS_JSON=":
                raise LookupError("no credentials in its environment")

    creds = os.path.join(state_dir, "credentials")
    tries = {
        "read operator creds": lambda: read(os.path.join(creds, "operators", "local.creds")),
        "read daemon creds": lambda: read(os.path.join(creds, "daemon.creds")),
        "read other agent creds": lambda: read(
            os.path.join(creds, "agents", f"{other_agent}.creds")
        ),
        "read other agent environment": other_environment,
        "read signing key": lambda: read(os.path.join(state_dir, "decision-log.key")),
        "write decision log": lambda: open_for_writing(os.path.join(state_dir, "decisions.db")),
        "connect forbidden port": lambda: connect(forbidden_port),
        "bind a port": bind,
        "signal the daemon": lambda: os.kill(daemon_pid, signal.SIGWINCH),
        "read daemon environment": daemon_environment,
        "open a raw socket": raw_socket,
    }
    if allowed_port:
        tries["connect allowed port"] = lambda: connect(allowed_port)
    outcome = {}
    for name, attempt in tries.items():
        try:
            attempt()
            outcome[name] = "allowed"
        except Exception as exc:
            outcome[name] = f"denied: {type(exc).__name__}: {exc}"
    return outcome
"""


class Attack(TypedDict, total=False):
    other_agent: str
    other_pid: int
    daemon_pid: int
    forbidden_port: int
    allowed_port: int
    in_process: dict[str, str]
    subprocess: dict[str, str]


def build() -> Any:
    async def attack(state: Attack) -> Attack:
        import os

        args = [
            os.environ["AGENTD_STATE_DIR"],
            state.get("other_agent", "echo"),
            state.get("other_pid", 0),
            state.get("daemon_pid", os.getppid()),
            state.get("forbidden_port", 1),
            state.get("allowed_port", 0),
        ]
        scope: dict[str, Any] = {}
        exec(ATTEMPTS, scope)  # noqa: S102 - the test's own attack code
        mine = scope["attempts"](*args)
        for name, outcome in mine.items():
            log.warning("attempt %r: %s", name, outcome)
        child = subprocess.run(  # noqa: ASYNC221 - a hostile graph blocks if it likes
            [
                sys.executable,
                "-c",
                ATTEMPTS + f"\nimport json\nprint(json.dumps(attempts(*{args!r})))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        theirs = json.loads(child.stdout) if child.returncode == 0 else {"error": child.stderr}
        return {"in_process": mine, "subprocess": theirs}

    builder = StateGraph(Attack)
    builder.add_node("attack", attack)
    builder.add_edge(START, "attack")
    builder.add_edge("attack", END)
    return builder.compile()
