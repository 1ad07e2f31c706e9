"""Turn pydantic validation errors into one ConfigError that names every bad field."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["describe_validation_error"]


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> list[str]:
    """One line per problem: `<toml.path>: <what is wrong>`."""
    problems: list[str] = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        path = ".".join(([prefix] if prefix else []) + loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(f"{path}: unknown key (remove it, or check its spelling)")
        elif kind == "missing":
            problems.append(f"{path}: required key is missing")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            problems.append(f"{path}: {err['msg']}{shown}")
    return problems
