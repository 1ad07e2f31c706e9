"""Packages whose pydantic half is imported on first use (agentd/_lazy.py): the names listed
under `if TYPE_CHECKING:` (what mypy and import-linter read) are the names the package's
`__getattr__` serves at run time, from the same modules; importing the packages loads no
pydantic, config models or cryptography; a name the package lacks is still an AttributeError."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LAZY_PACKAGES = ("agentd.bus", "agentd.control")
ALL_LIGHT = ("agentd.bus", "agentd.control", "agentd.identity")


def _type_checking_imports(package: ModuleType) -> dict[str, str]:
    """{name: module} imported under `if TYPE_CHECKING:` in the package's __init__.py."""
    assert package.__file__ is not None
    tree = ast.parse(Path(package.__file__).read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.unparse(stmt)
                found.update({alias.name: stmt.module for alias in stmt.names})
    return found


def _fresh(code: str) -> Any:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_the_type_checking_names_are_the_lazy_ones_and_resolve_to_the_same_objects(
    name: str,
) -> None:
    typed = _type_checking_imports(importlib.import_module(name))
    assert typed, f"{name} has no `if TYPE_CHECKING:` imports: not lazy any more?"
    # in a fresh interpreter: which public names the package does not hold after its import
    deferred = _fresh(
        f"import json, {name} as p\nprint(json.dumps([n for n in p.__all__ if n not in vars(p)]))"
    )
    assert sorted(typed) == sorted(deferred)
    package = importlib.import_module(name)
    for attr, module in typed.items():
        assert attr in package.__all__
        assert getattr(package, attr) is getattr(importlib.import_module(module), attr)
    for attr in package.__all__:
        getattr(package, attr)  # every public name resolves


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_a_name_the_package_lacks_is_an_attribute_error(name: str) -> None:
    package = importlib.import_module(name)
    with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'Nonesuch'"):
        package.Nonesuch  # noqa: B018
    with pytest.raises(ImportError):
        exec(f"from {name} import Nonesuch")


def test_importing_bus_control_and_identity_loads_no_pydantic_until_a_model_is_used() -> None:
    heavy = ("pydantic", "agentd.config", "cryptography", "anyio._backends")
    code = (
        "import json, sys\n"
        f"import {', '.join(ALL_LIGHT)}\n"
        f"before = sorted(m for m in sys.modules if m.startswith({heavy!r}))\n"
        "from agentd.bus import Message\n"
        "from agentd.control import ControlRequest\n"
        "print(json.dumps([before, 'pydantic' in sys.modules, Message.__module__]))"
    )
    before, pydantic_after, module = _fresh(code)
    assert before == []
    assert pydantic_after is True and module == "agentd.bus._message"
