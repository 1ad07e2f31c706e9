"""MCP tools as registry entries: the server's input schema, checked strict and closed.

"Strict" follows OpenAI's strict mode for function calling (structured outputs), the rules a
model's constrained decoder can enforce exactly:

- the root is `{"type": "object"}` (not a union);
- every schema says its `type` (a list of types is allowed: `["string", "null"]`), or is an
  `enum`, `const`, `anyOf` or `$ref` (to `$defs` / `definitions`) of such schemas;
- every object is closed: `additionalProperties` absent (closed here) or `false`; never `true`
  or a schema (an open map cannot be decoded strictly), no `patternProperties`;
- none of `allOf`, `oneOf`, `not`, `if`/`then`/`else`, `dependentRequired`,
  `dependentSchemas`, `unevaluatedProperties` (composition a decoder cannot follow);
- at most 10 levels of nested objects and 5,000 properties in all.

One deliberate difference: an optional property (not in `required`) is accepted as it is.
OpenAI's strict mode wants every property required and optional ones as `[T, "null"]`; that is
a rewriting of the same schema, not a schema strict mode cannot express, and the arguments
agentd validates and policy decides on stay the server's own.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict

from agentd.tools._registry import InvalidArguments, ToolSpec

__all__ = ["JsonArguments", "McpToolSpec", "SchemaProblem", "strict_schema"]

MAX_DEPTH = 10
MAX_PROPERTIES = 5000
_NOT_STRICT = (
    "allOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "unevaluatedProperties",
)


class SchemaProblem(ValueError):
    """A tool's input schema is malformed or cannot be expressed as a strict JSON schema."""


def strict_schema(schema: Any) -> dict[str, Any]:
    """`schema` closed (`additionalProperties: false` on every object), or `SchemaProblem`
    saying where it is malformed or not strict (see the module's rules)."""
    if not isinstance(schema, dict):
        raise SchemaProblem(
            f"malformed schema: a JSON object expected, got {type(schema).__name__}"
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise SchemaProblem(f"malformed schema at {where}: {exc.message}") from None
    if schema.get("type") != "object":
        raise SchemaProblem(
            f'not strict: the root must be {{"type": "object"}}, got type {schema.get("type")!r}'
        )
    closed = copy.deepcopy(schema)
    count = [0]
    _close(closed, "(root)", 0, count)
    if count[0] > MAX_PROPERTIES:
        raise SchemaProblem(f"not strict: {count[0]} properties (at most {MAX_PROPERTIES})")
    return closed


def _close(node: Any, where: str, depth: int, count: list[int]) -> None:
    if not isinstance(node, dict):
        raise SchemaProblem(f"not strict: {where} is not a schema object")
    for key in _NOT_STRICT:
        if key in node:
            raise SchemaProblem(f"not strict: {where} uses {key!r}")
    for key in ("$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            _close(sub, f"{where}/{key}/{name}", depth, count)
    if "anyOf" in node:
        for i, sub in enumerate(node["anyOf"]):
            _close(sub, f"{where}/anyOf/{i}", depth, count)
    elif not any(k in node for k in ("type", "enum", "const", "$ref")):
        raise SchemaProblem(f"not strict: {where} says no type (any value cannot be decoded)")
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    if "object" in types or "properties" in node:
        if depth + 1 > MAX_DEPTH:
            raise SchemaProblem(f"not strict: {where} nests objects deeper than {MAX_DEPTH}")
        extra = node.get("additionalProperties", False)
        if extra is not False:
            raise SchemaProblem(
                f"not strict: {where} allows additional properties (an open map); strict "
                "objects list every property"
            )
        node["additionalProperties"] = False
        for name, sub in (node.get("properties") or {}).items():
            count[0] += 1
            _close(sub, f"{where}/properties/{name}", depth + 1, count)
    if "array" in types and "items" in node:
        _close(node["items"], f"{where}/items", depth, count)
    for i, sub in enumerate(node.get("prefixItems") or ()):
        _close(sub, f"{where}/prefixItems/{i}", depth, count)


class JsonArguments(BaseModel):
    """An MCP call's validated arguments, as the JSON they are (the fields are the extras)."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True)
class McpToolSpec(ToolSpec):
    """A tool of a mounted MCP server: an ordinary registry entry whose schema is the server's
    (closed) and whose `target` calls the server's session."""

    server: str = ""
    remote_name: str = ""
    """The tool's own name on its server (the entry's name is `<server>.<remote_name>`)."""
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    read_only: bool = False
    """The server's `readOnlyHint`: the tool does not change its environment."""
    idempotent: bool = False
    """The server's `idempotentHint`: a repeated call with the same arguments has no further
    effect. Both are hints, believed only of a trusted server (`CallPipeline.keyed`)."""

    @property
    def no_effect_to_repeat(self) -> str | None:
        """Which annotation says a rerun of a call repeats no effect (None: neither does)."""
        if self.read_only:
            return "readOnlyHint"
        return "idempotentHint" if self.idempotent else None

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        return dict(self.input_schema)

    @property
    def where(self) -> str:
        return f"[tools.mcp.{self.server}] tool {self.remote_name!r}"

    @functools.cached_property
    def _validator(self) -> Draft202012Validator:
        return Draft202012Validator(dict(self.input_schema))

    def validate(self, args: Mapping[str, Any]) -> BaseModel:
        """Strict JSON validation against the closed schema (jsonschema: "5000" is not a
        number, `true` is not an integer), each problem naming its field."""
        problems = []
        for err in sorted(self._validator.iter_errors(dict(args)), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in err.absolute_path)
            if err.validator == "additionalProperties":
                extra = sorted(set(err.instance) - set(err.schema.get("properties") or {}))
                prefix = f"{where}." if where else ""
                problems += [f"{prefix}{name}: not an argument of {self.name}" for name in extra]
            elif err.validator == "required":
                name = str(err.message).split("'")[1] if "'" in err.message else "?"
                prefix = f"{where}." if where else ""
                problems.append(f"{prefix}{name}: required argument is missing")
            else:
                problems.append(f"{where or '(arguments)'}: {err.message}")
        if problems:
            raise InvalidArguments(self.name, problems)
        return JsonArguments.model_validate(dict(args))


McpCall = Callable[[dict[str, Any]], Awaitable[Any]]
