"""Every package agentd imports at run time is declared in pyproject.toml's dependencies.

A package that happens to arrive with another dependency (httpx with openai, orjson with
langsmith) disappears the day that dependency stops bringing it; declaring what the code
imports keeps a fresh install working."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_top_level_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((REPO / "agentd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        _normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency() -> None:
    owners = packages_distributions()
    declared = declared_distributions()
    missing = []
    for module, where in imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module == "agentd":
            continue
        distributions = {_normalise(d) for d in owners.get(module, [])}
        assert distributions, (
            f"{where.relative_to(REPO)} imports {module!r}, which no installed package provides"
        )
        if not distributions & declared:
            missing.append(
                f"{module} ({', '.join(sorted(distributions))}; {where.relative_to(REPO)})"
            )
    assert not missing, "imported but not declared in pyproject.toml dependencies: " + "; ".join(
        missing
    )
