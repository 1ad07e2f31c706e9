"""`agentd agents import path/to/langgraph.json`: write the agents, say what is missing."""

from __future__ import annotations

import sys
from pathlib import Path

from agentd.config import import_project, load_agent

__all__ = ["import_langgraph"]


def import_langgraph(
    config_file: Path, agents_dir: Path, force: bool, enabled: list[str] | None = None
) -> int:
    """Import the project's graphs as agents under `agents_dir` and print the report; 1 when
    a written agent does not load (its spec names what), else 0 (missing packages are warned
    about: the agents are written, and run once the packages are installed)."""
    project = import_project(config_file, agents_dir, force=force)
    failed = 0
    print(f"imported {len(project.graphs)} graph(s) from {project.source} into {agents_dir}:")
    for graph, spec in zip(project.graphs, project.written, strict=True):
        try:
            agent = load_agent(spec.parent)
        except Exception as exc:  # the spec names file and field
            failed += 1
            print(f"  FAIL {graph.agent}: {exc}", file=sys.stderr)
            continue
        print(f"  {graph.agent:<20} graph {graph.ref} (version {agent.version})")
    if project.dependencies:
        print("dependencies (agentd installs nothing; its environment runs the graphs):")
    for dep in project.dependencies:
        print(f"  {dep.state:<13} {dep.requirement}" + (f": {dep.detail}" if dep.detail else ""))
    missing = [d for d in project.dependencies if d.state in ("missing", "wrong version")]
    if missing:
        print(
            f"warning: {len(missing)} dependency(ies) missing: the graphs that import them fail "
            "to start until they are installed",
            file=sys.stderr,
        )
    if project.env_file is not None:
        names = ", ".join(project.env_names) or "nothing"
        state = "" if project.env_file.is_file() else " (not found)"
        print(
            f"env: {project.env_file}{state} sets {names}: not copied into agent.toml; set them "
            "in agentd's environment (replicas inherit it)"
        )
    left_out = [g.agent for g in project.graphs if enabled is not None and g.agent not in enabled]
    if left_out:
        print(f"note: [agents].enabled does not list {', '.join(left_out)}: add them to serve them")
    print("agentd serves them from its next start (`agentd agents check` validates them)")
    return 1 if failed else 0
