"""Agent specs: `agents/<name>/agent.toml` plus the Python module that builds its graph.

An agent's *version* is a hash of its spec and every Python source file in its folder, so any
change to what the agent is or does shows as a new version in `agentctl ps` and in every record.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentd.config._errors import describe_validation_error
from agentd.config._names import IDENTITY_NAME, reserved_name_problem
from agentd.config._sandbox import AgentSandboxSpec
from agentd.errors import SpecError

__all__ = ["AgentSpec", "LoadedAgent", "ReplicaBounds", "RestartSpec", "load_agent", "load_agents"]

AGENT_NAME = IDENTITY_NAME
# module:attr, or (a LangGraph project's) path/file.py:attr
_GRAPH_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*|[A-Za-z0-9_./-]+\.py):[A-Za-z_][A-Za-z0-9_]*$")
# folders of a project whose sources are not the agent's (environments, caches, VCS)
_NOT_SOURCES = {"__pycache__", "node_modules", "venv", "env", "site-packages"}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReplicaBounds(_Section):
    """[replicas]: how many worker processes run this agent."""

    initial: int = Field(1, ge=0, le=256)
    min: int = Field(1, ge=0, le=256)
    max: int = Field(4, ge=1, le=256)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if not self.min <= self.initial <= self.max:
            raise ValueError(
                f"need min <= initial <= max, got {self.min}, {self.initial}, {self.max}"
            )
        return self


class RestartSpec(_Section):
    """[restart]: how the supervisor treats a replica that exits."""

    type: Literal["permanent", "transient", "temporary"] = "permanent"
    max_restarts: int = Field(5, ge=0)
    window_s: float = Field(60.0, gt=0)
    backoff_initial_s: float = Field(0.2, ge=0)
    backoff_max_s: float = Field(30.0, gt=0)


class AgentSpec(_Section):
    """The contents of one agent.toml."""

    name: str = Field(pattern=AGENT_NAME.pattern)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        problem = reserved_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    description: str = ""
    graph: str = Field(
        pattern=_GRAPH_REF.pattern,
        description="module:attr (or path/file.py:attr) in the agent folder, or in `project`",
    )
    project: str | None = Field(
        None,
        min_length=1,
        description="a LangGraph project's folder (relative to this one, or absolute) that "
        "holds the graph: `agentd agents import langgraph.json` writes it",
    )
    model_pool: str | None = None
    tools: list[str] = []
    concurrency: int = Field(1, ge=1, le=1024)
    run_timeout_s: float = Field(300.0, gt=0)
    max_deliveries: int | None = Field(None, ge=1, le=1000)
    replicas: ReplicaBounds = ReplicaBounds()
    restart: RestartSpec = RestartSpec()
    env: dict[str, str] = {}
    checkpoint: bool = Field(True, description="persist conversation state (LangGraph, SQLite)")
    autoscale: bool = Field(True, description="scale between replicas.min and max on backlog")
    spawn_quota: int = Field(4, ge=0, le=256, description="agents this one may spawn at once")
    idle_timeout_s: float = Field(300.0, gt=0, description="a spawned instance ends when idle")
    sandbox: AgentSandboxSpec = AgentSandboxSpec()


class LoadedAgent:
    """A validated spec, the folder it lives in, and its version hash."""

    __slots__ = ("directory", "spec", "spec_path", "version")

    def __init__(self, spec: AgentSpec, spec_path: Path, version: str) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.directory = spec_path.parent
        self.version = version

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def project(self) -> Path | None:
        """The LangGraph project folder the graph is loaded from (None: the agent folder)."""
        if self.spec.project is None:
            return None
        return (self.directory / self.spec.project).resolve()

    @property
    def graph_file(self) -> Path:
        """The file of the graph's module."""
        return graph_file(self.spec.graph, self.project or self.directory)


def graph_file(ref: str, root: Path) -> Path:
    """The file `ref`'s module is in, under `root`."""
    location = ref.rpartition(":")[0]
    if location.endswith(".py"):
        return root / location
    return root / (location.replace(".", "/") + ".py")


def agent_version(directory: Path, project: Path | None = None) -> str:
    """sha256 over agent.toml and every .py file below the folder, in a stable order, and
    those of the LangGraph project the graph comes from (outside environments and caches)."""
    digest = hashlib.sha256()
    roots = [(directory, "")] + ([(project, "project:")] if project is not None else [])
    for root, label in roots:
        files = [directory / "agent.toml"] if not label else []
        files += sorted(root.rglob("*.py"))
        for file in files:
            parts = file.relative_to(root).parts
            if any(p in _NOT_SOURCES or p.startswith(".") for p in parts[:-1]):
                continue
            digest.update((label + file.relative_to(root).as_posix()).encode())
            digest.update(b"\0")
            digest.update(file.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def load_agent(directory: Path) -> LoadedAgent:
    """Load and validate `directory/agent.toml`; raise SpecError naming file and field."""
    spec_path = directory / "agent.toml"
    source = str(spec_path)
    try:
        data: dict[str, Any] = tomllib.loads(spec_path.read_text("utf-8"))
    except FileNotFoundError:
        raise SpecError(source, ["file not found"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(source, [f"not valid TOML: {exc}"]) from None
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, describe_validation_error(exc)) from None
    problems: list[str] = []
    if spec.name != directory.name:
        problems.append(f"name: {spec.name!r} must match its folder name {directory.name!r}")
    project = (directory / spec.project).resolve() if spec.project is not None else None
    if project is not None and not project.is_dir():
        problems.append(f"project: folder {project} not found")
    root = project or directory
    module_file = graph_file(spec.graph, root)
    if ".." in Path(spec.graph.rpartition(":")[0]).parts:
        problems.append(f"graph: {spec.graph!r} must name a file inside {root}")
    elif not module_file.is_file() and (project is None or project.is_dir()):
        problems.append(f"graph: module file {module_file.name} not found in {root}")
    if problems:
        raise SpecError(source, problems)
    return LoadedAgent(spec, spec_path, agent_version(directory, project))


def load_agents(
    root: Path, enabled: list[str] | None = None
) -> tuple[list[LoadedAgent], list[SpecError]]:
    """Every agent under `root` (or only `enabled` ones); bad specs are returned, not raised,
    so one broken agent does not stop the others."""
    agents: list[LoadedAgent] = []
    errors: list[SpecError] = []
    if enabled is not None:
        folders = [root / name for name in enabled]
    else:
        folders = sorted(p.parent for p in root.glob("*/agent.toml"))
    for folder in folders:
        try:
            agents.append(load_agent(folder))
        except SpecError as exc:
            errors.append(exc)
    return agents, errors
