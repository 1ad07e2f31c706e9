"""A LangGraph Server project (`langgraph.json`) as agentd agents: `agentd agents import`.

`langgraph.json` names the project's graphs (`"graphs": {"id": "./src/agent.py:graph"}`, or
`{"id": {"path": ..., "description": ...}}`), the packages it needs (`"dependencies"`: PyPI
requirements, local folders such as `"."`, git URLs) and its environment (`"env"`: a `.env` file
or a table). Importing writes one `agents/<name>/agent.toml` per graph whose `project` key points
at the project folder, where the graph stays: the app runs unchanged, and its sources count in
the agent's version (agentd/config/_agent_spec.py). Nothing is installed: each dependency is
reported as installed, missing or not checkable, and a `.env` file's variable names are listed
(its values are not copied into agent.toml: they are usually secrets; give them to the daemon's
environment, which replicas inherit).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from agentd.config._agent_spec import _GRAPH_REF, AGENT_NAME
from agentd.config._names import reserved_name_problem
from agentd.errors import SpecError

__all__ = ["Dependency", "ImportedGraph", "ProjectImport", "import_project", "read_project"]

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


@dataclass(frozen=True)
class ImportedGraph:
    graph_id: str
    agent: str
    ref: str
    description: str


@dataclass(frozen=True)
class Dependency:
    requirement: str
    state: str
    """`installed`, `missing`, `wrong version`, `local` or `unchecked`."""
    detail: str = ""


@dataclass
class ProjectImport:
    """What a langgraph.json holds, as agentd will run it."""

    source: Path
    root: Path
    graphs: list[ImportedGraph] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """A table in langgraph.json: copied into each agent.toml's env."""
    env_file: Path | None = None
    env_names: list[str] = field(default_factory=list)
    """The variables a .env file sets: reported, not copied."""
    written: list[Path] = field(default_factory=list)


def read_project(config_file: Path) -> ProjectImport:
    """Read and check `config_file`; raise SpecError naming every problem."""
    source = str(config_file)
    try:
        data = json.loads(config_file.read_text("utf-8"))
    except FileNotFoundError:
        raise SpecError(source, ["file not found"]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(source, [f"not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["must be a JSON object"])
    project = ProjectImport(source=config_file.resolve(), root=config_file.resolve().parent)
    problems: list[str] = []
    graphs = data.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        problems.append('graphs: must be an object naming at least one graph ("id": "file:attr")')
        graphs = {}
    names: dict[str, str] = {}
    for graph_id, entry in graphs.items():
        graph = _graph(str(graph_id), entry, project.root, problems)
        if graph is None:
            continue
        if graph.agent in names:
            problems.append(
                f"graphs.{graph_id}: its agent name {graph.agent!r} is taken by graph "
                f"{names[graph.agent]!r}"
            )
            continue
        names[graph.agent] = graph.graph_id
        project.graphs.append(graph)
    dependencies = data.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        problems.append("dependencies: must be a list of strings")
        dependencies = []
    project.dependencies = [d for dep in dependencies for d in _check(dep, project.root)]
    _env(data.get("env"), project, problems)
    if problems:
        raise SpecError(source, problems)
    return project


def import_project(config_file: Path, agents_dir: Path, *, force: bool = False) -> ProjectImport:
    """Write an agent.toml per graph of `config_file` under `agents_dir`; raise SpecError
    (writing nothing) when the project is invalid or an agent folder exists (unless `force`)."""
    project = read_project(config_file)
    taken = [
        str(agents_dir / g.agent)
        for g in project.graphs
        if (agents_dir / g.agent).exists() and not force
    ]
    if taken:
        raise SpecError(
            str(config_file),
            [f"agent folder {t} exists (--force replaces its agent.toml)" for t in taken],
        )
    for graph in project.graphs:
        folder = agents_dir / graph.agent
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / "agent.toml"
        spec.write_text(_agent_toml(graph, project, folder), "utf-8")
        project.written.append(spec)
    return project


def _graph(graph_id: str, entry: Any, root: Path, problems: list[str]) -> ImportedGraph | None:
    where = f"graphs.{graph_id}"
    description = ""
    if isinstance(entry, dict):
        description = str(entry.get("description") or "")
        entry = entry.get("path")
    if not isinstance(entry, str) or ":" not in entry:
        problems.append(f'{where}: must be "path/file.py:attr" or "module:attr"')
        return None
    location, _, attr = entry.rpartition(":")
    location = location.removeprefix("./")
    ref = f"{location}:{attr}"
    if not _GRAPH_REF.match(ref) or ".." in Path(location).parts:
        problems.append(f"{where}: {entry!r} is not a file or module inside the project")
        return None
    if location.endswith(".py") and not (root / location).is_file():
        problems.append(f"{where}: {root / location} not found")
        return None
    agent = _agent_name(graph_id)
    reserved = reserved_name_problem(agent)
    if not AGENT_NAME.match(agent) or reserved:
        problems.append(f"{where}: cannot be an agent name ({reserved or repr(agent)})")
        return None
    return ImportedGraph(graph_id, agent, ref, description)


def _agent_name(graph_id: str) -> str:
    """A graph id as an agent name: lower case, [a-z0-9_-], starting with a letter."""
    name = re.sub(r"[^a-z0-9_-]+", "-", graph_id.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"graph-{name}".rstrip("-")
    return name[:63]


def _check(requirement: str, root: Path) -> list[Dependency]:
    text = requirement.strip()
    if text.startswith((".", "/")):
        folder = (root / text).resolve()
        listed = _local_requirements(folder)
        found = [Dependency(text, "local", f"{folder} (on the graph's import path)")]
        return found + [d for r in listed for d in _check(r, root)]
    if "://" in text or text.startswith("git+"):
        return [Dependency(text, "unchecked", "a URL: install it into agentd's environment")]
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - langchain-core depends on packaging
        return [Dependency(text, "unchecked", "packaging is not installed")]
    try:
        parsed = Requirement(text)
    except InvalidRequirement as exc:
        return [Dependency(text, "unchecked", f"not a requirement: {exc}")]
    if parsed.marker is not None and not parsed.marker.evaluate():
        return [Dependency(text, "installed", "not needed on this platform")]
    try:
        version = metadata.version(parsed.name)
    except metadata.PackageNotFoundError:
        return [Dependency(text, "missing", f"pip install '{text}'")]
    if parsed.specifier and not parsed.specifier.contains(version, prereleases=True):
        return [Dependency(text, "wrong version", f"{version} is installed")]
    return [Dependency(text, "installed", version)]


def _local_requirements(folder: Path) -> list[str]:
    """What a local package folder says it needs (pyproject.toml, else requirements.txt)."""
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return []
        listed = data.get("project", {}).get("dependencies", [])
        return [str(d) for d in listed] if isinstance(listed, list) else []
    requirements = folder / "requirements.txt"
    if requirements.is_file():
        lines = requirements.read_text("utf-8", errors="replace").splitlines()
        return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]
    return []


def _env(value: Any, project: ProjectImport, problems: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        project.env = {str(k): str(v) for k, v in value.items()}
        return
    if not isinstance(value, str):
        problems.append("env: must be a .env file's path or an object of variables")
        return
    env_file = (project.root / value).resolve()
    project.env_file = env_file
    if not env_file.is_file():
        return  # reported as missing by the caller: the project may keep it out of git
    lines = env_file.read_text("utf-8", errors="replace").splitlines()
    project.env_names = [m.group(1) for ln in lines if (m := _ENV_LINE.match(ln))]


def _agent_toml(graph: ImportedGraph, project: ProjectImport, folder: Path) -> str:
    relative = os.path.relpath(project.root, folder.resolve())
    description = graph.description or (
        f"graph {graph.graph_id!r} of the LangGraph project {project.source}"
    )
    lines = [
        f"# imported by `agentd agents import {project.source}` (graph {graph.graph_id!r})",
        f"name = {json.dumps(graph.agent)}",
        f"description = {json.dumps(description)}",
        f"graph = {json.dumps(graph.ref)}",
        f"project = {json.dumps(relative)}  # the project folder, relative to this one",
        "checkpoint = true  # the thread's state, as LangGraph Server keeps it",
    ]
    if project.env:
        lines.append("")
        lines.append("[env]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(project.env.items())]
    return "\n".join(lines) + "\n"
