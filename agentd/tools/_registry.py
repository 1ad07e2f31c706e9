"""Tools: typed Python callables (or LangChain tools) collected from a directory of files.

A tool is a function decorated with `@tool("loan.approve")` whose parameters all have type
hints; the hints become a pydantic model (unknown arguments forbidden) and so a JSON schema. A
LangChain `@tool` object is accepted too: its `name` and `args_schema` are used as they are,
with unknown arguments forbidden as well.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import re
import sys
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentd.config import TOOL_NAME
from agentd.errors import AgentdError, ConfigError

__all__ = ["InvalidArguments", "ToolRegistry", "ToolSpec", "Trust", "load_tool_file", "tool"]

Trust = Literal["trusted", "untrusted"]
"""Whether a tool's results may steer a run: "untrusted" results (a fetch, web search, mail, an
MCP server) taint the run that receives them; see README.md, "Taint"."""

# a NATS subject token sequence and a policy object name at once (policy.csv's characters)
_MARK = "__agentd_tool__"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _ToolMark:
    name: str
    isolated: bool
    timeout_s: float | None
    max_running: int | None
    trust: Trust
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    connect_ports: tuple[int, ...] = ()


def tool(
    name: str,
    *,
    isolated: bool = False,
    timeout_s: float | None = None,
    max_running: int | None = None,
    trust: Trust = "trusted",
    read: Iterable[str] = (),
    write: Iterable[str] = (),
    connect_ports: Iterable[int] = (),
) -> Callable[[F], F]:
    """Declare a typed function (sync or async) as the tool `name`; the function is unchanged.

    `isolated=True` runs each call in a child process that is killed on timeout (declare it for
    tools that run work a caller shapes: queries, code, fetches); `timeout_s` overrides the
    gateway's default call timeout for this tool; `max_running` its bound on calls running at
    once ([tools].max_running_per_tool otherwise); `trust="untrusted"` for tools whose results
    come from outside (fetches, web search, mail): they taint the run that receives them.
    An isolated call runs in the sandbox (docs/sandbox.md, "Isolated tools"): `read` and `write`
    name the paths it needs beyond its scratch folder ($VAR expands; relative to the tools
    folder), `connect_ports` the TCP ports it may connect to.
    `[tools.overrides."<name>"]` overrides each of these.
    """
    if not TOOL_NAME.match(name):
        raise ValueError(f"tool name {name!r}: use letters, digits, _ and -, dot-separated")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"tool {name}: timeout_s must be positive")
    if max_running is not None and max_running < 1:
        raise ValueError(f"tool {name}: max_running must be at least 1")
    if trust not in ("trusted", "untrusted"):
        raise ValueError(f'tool {name}: trust must be "trusted" or "untrusted", not {trust!r}')
    reads, writes = _paths(name, "read", read), _paths(name, "write", write)
    ports = tuple(connect_ports)
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"tool {name}: connect_ports: {port!r} is not a TCP port (1-65535)")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@tool({name!r}) must decorate a function")
        found = _ToolMark(name, isolated, timeout_s, max_running, trust, reads, writes, ports)
        setattr(fn, _MARK, found)
        return fn

    return mark


def _paths(name: str, key: str, paths: Iterable[str]) -> tuple[str, ...]:
    if isinstance(paths, str):
        raise ValueError(f"tool {name}: {key} must be a list of paths, not one string")
    out = tuple(str(p) for p in paths)
    if any(not p for p in out):
        raise ValueError(f"tool {name}: {key}: an empty path")
    return out


class InvalidArguments(AgentdError):
    """A call's arguments do not fit the tool's schema; `problems` name each field."""

    def __init__(self, tool: str, problems: list[str]) -> None:
        self.tool = tool
        self.problems = problems
        super().__init__(f"invalid arguments for {tool}: " + "; ".join(problems))


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, argument model, how it runs, and where it was defined."""

    name: str
    description: str
    args_model: type[BaseModel]
    target: Any
    """The function, or the LangChain tool object."""
    kind: Literal["function", "langchain", "mcp"]
    is_async: bool
    isolated: bool
    timeout_s: float | None
    file: Path
    attr: str
    """The module attribute that holds the tool (how an isolated child finds it)."""
    line: int | None = None
    max_running: int | None = None
    """Calls of this tool running at once, all agents; None: [tools].max_running_per_tool."""
    trust: Trust = "trusted"
    """As declared; `[tools.overrides."<name>"].trust` replaces it in the gateway."""
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    connect_ports: tuple[int, ...] = ()
    """What an isolated call's sandbox grants beyond the defaults, as declared (unexpanded)."""

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        return self.args_model.model_json_schema()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)

    def validate(self, args: Mapping[str, Any]) -> BaseModel:
        """The arguments as the tool's model, or `InvalidArguments` naming every bad field.

        Validation is strict JSON validation (a string is not a number): the caller's JSON is
        taken as it is, and the gateway decides on and runs exactly the validated arguments.
        """
        try:
            text = json.dumps(dict(args), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArguments(self.name, [f"(arguments): not JSON: {exc}"]) from None
        try:
            return self.args_model.model_validate_json(text, strict=True)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
                if err["type"] == "extra_forbidden":
                    problems.append(f"{where}: not an argument of {self.name}")
                elif err["type"] == "missing":
                    problems.append(f"{where}: required argument is missing")
                else:
                    problems.append(f"{where}: {err['msg']}")
            raise InvalidArguments(self.name, problems) from None


class ToolRegistry:
    """The tools the gateway may run, by name."""

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self._mounted: dict[str, set[str]] = {}  # source (mcp:<server>) -> its tool names
        self._rank: dict[str, int] = {}
        problems: list[str] = []
        for spec in specs:
            other = self._tools.get(spec.name)
            if other is not None:
                problems.append(
                    f"tool {spec.name!r} at {spec.where} is also defined at {other.where}"
                )
                continue
            self._tools[spec.name] = spec
        if problems:
            raise ConfigError("tools", problems)

    @classmethod
    def load(cls, directory: Path) -> ToolRegistry:
        """Import every `*.py` in `directory` (not below it; names starting with `_` are
        helpers and skipped) and collect its tools. Raises `ConfigError` naming file and line."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(str(directory), ["tools directory not found ([tools].dir)"])
        specs: list[ToolSpec] = []
        for file in sorted(directory.glob("*.py")):
            if not file.name.startswith("_"):
                specs.extend(load_tool_file(file))
        try:
            return cls(specs)
        except ConfigError as exc:
            raise ConfigError(str(directory), exc.problems) from None

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def mount(self, source: str, specs: Iterable[ToolSpec], *, rank: int = 0) -> list[str]:
        """Make `specs` the tools of `source` (an MCP server: `mcp:<server>`), replacing what
        it had. A name held by another source (a dot collision) goes to the one that ranks
        first: tools/ always, then the lower `rank` (the server's place in agentd.toml), so the
        outcome does not depend on which server answered first. Returns the problems, each
        naming the tool and both sources."""
        self.unmount(source)
        self._rank[source] = rank
        problems: list[str] = []
        names: set[str] = set()
        for spec in specs:
            other = self._tools.get(spec.name)
            holder = self._source_of(spec.name) if other is not None else None
            if other is not None and (holder is None or self._rank[holder] <= rank):
                problems.append(
                    f"tool {spec.name!r} of {source} collides with {spec.name!r} of "
                    f"{holder or 'tools/'} ({other.where}), which ranks first; left out"
                )
                continue
            if holder is not None and other is not None:
                self._mounted[holder].discard(spec.name)
                problems.append(
                    f"tool {spec.name!r} of {holder} collides with {spec.name!r} of {source}, "
                    "which ranks first (agentd.toml order); left out"
                )
            self._tools[spec.name] = spec
            names.add(spec.name)
        self._mounted[source] = names
        return problems

    def unmount(self, source: str) -> None:
        """Remove every tool `source` mounted."""
        for name in self._mounted.pop(source, set()):
            self._tools.pop(name, None)

    def _source_of(self, name: str) -> str | None:
        return next((src for src, names in self._mounted.items() if name in names), None)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def __len__(self) -> int:
        return len(self._tools)


def load_tool_file(file: Path) -> list[ToolSpec]:
    """Import one file by path (under a module name unique to the path) and return its tools."""
    file = Path(file).resolve()
    module = _import_file(file)
    specs: list[ToolSpec] = []
    problems: list[str] = []
    seen: set[int] = set()
    for attr, value in list(vars(module).items()):
        if id(value) in seen:
            continue
        try:
            spec = _spec_of(value, file, attr)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if spec is not None:
            seen.add(id(value))
            specs.append(spec)
    if problems:
        raise ConfigError(str(file), problems)
    return specs


def _import_file(file: Path) -> ModuleType:
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:12]
    name = f"agentd_tools_{re.sub(r'[^A-Za-z0-9_]', '_', file.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(str(file), ["cannot be imported as a Python module"])
    module = importlib.util.module_from_spec(spec)
    # registered while it runs, as a normal import is (dataclasses and pydantic look it up)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ConfigError(str(file), [f"line {exc.lineno}: syntax error: {exc.msg}"]) from None
    except Exception as exc:
        del sys.modules[name]
        line = _line_in(exc, file)
        where = f"line {line}: " if line else ""
        problem = f"{where}importing failed: {type(exc).__name__}: {exc}"
        raise ConfigError(str(file), [problem]) from None
    return module


def _line_in(exc: BaseException, file: Path) -> int | None:
    """The innermost line of `file` in the exception's traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == file:
            line = frame.lineno
    return line


def _spec_of(value: Any, file: Path, attr: str) -> ToolSpec | None:
    mark = getattr(value, _MARK, None) if callable(value) else None
    if isinstance(mark, _ToolMark):
        return _function_spec(value, mark, file, attr)
    base = _langchain_base()
    if base is not None and isinstance(value, base):
        return _langchain_spec(value, file, attr)
    return None


def _function_spec(fn: Callable[..., Any], mark: _ToolMark, file: Path, attr: str) -> ToolSpec:
    code = getattr(fn, "__code__", None)
    line = code.co_firstlineno if code is not None else None

    def bad(reason: str) -> ConfigError:
        return ConfigError(str(file), [f"line {line}: tool {mark.name} ({attr}): {reason}"])

    if not inspect.isfunction(fn):
        raise bad("only plain functions can be tools")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise bad(f"its type hints cannot be resolved: {exc}") from None
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise bad(f"*{param.name} / **{param.name}: every argument must be named and typed")
        if param.kind is param.POSITIONAL_ONLY:
            raise bad(f"{param.name} is positional-only: arguments are passed by name")
        if param.name not in hints:
            raise bad(f"argument {param.name!r} has no type hint (the hint is its schema)")
        if param.name.startswith("_"):
            raise bad(f"argument {param.name!r}: names starting with _ cannot be arguments")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    try:
        model = create_model(
            mark.name, __config__=ConfigDict(extra="forbid"), __doc__=fn.__doc__, **fields
        )
        model.model_json_schema()
    except Exception as exc:
        raise bad(f"no JSON schema for its arguments: {exc}") from None
    return ToolSpec(
        name=mark.name,
        description=inspect.cleandoc(fn.__doc__ or ""),
        args_model=model,
        target=fn,
        kind="function",
        is_async=inspect.iscoroutinefunction(fn),
        isolated=mark.isolated,
        timeout_s=mark.timeout_s,
        file=file,
        attr=attr,
        line=line,
        max_running=mark.max_running,
        trust=mark.trust,
        read=mark.read,
        write=mark.write,
        connect_ports=mark.connect_ports,
    )


def _langchain_base() -> type | None:
    try:
        from langchain_core.tools import BaseTool
    except ImportError:  # optional: typed functions need no LangChain
        return None
    return BaseTool


def _langchain_spec(obj: Any, file: Path, attr: str) -> ToolSpec:
    name = str(obj.name)
    schema = obj.args_schema
    if not TOOL_NAME.match(name):
        raise ConfigError(str(file), [f"LangChain tool {attr}: name {name!r} is not a tool name"])
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigError(
            str(file), [f"LangChain tool {name} ({attr}): args_schema must be a pydantic model"]
        )
    # the same model, closed: an argument the tool does not declare is an error, not ignored
    closed = type(
        schema.__name__, (schema,), {"model_config": {**schema.model_config, "extra": "forbid"}}
    )
    func = getattr(obj, "func", None) or getattr(obj, "coroutine", None)
    code = getattr(func, "__code__", None)
    return ToolSpec(
        name=name,
        description=str(obj.description or ""),
        args_model=closed,
        target=obj,
        kind="langchain",
        is_async=True,
        isolated=False,
        timeout_s=None,
        file=file,
        attr=attr,
        line=code.co_firstlineno if code is not None else None,
    )
