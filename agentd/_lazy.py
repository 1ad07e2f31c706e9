"""Public names of a package that are imported when first used (PEP 562 module `__getattr__`).

`agentctl status` needs a credentials file, a subject name and a NATS connection from agentd.bus,
agentd.control and agentd.identity; importing those packages whole would also build their
pydantic models, about a third of the console's start (agentd/cli/README.md, "Startup"). A
package lists such names twice: under `if TYPE_CHECKING:` as ordinary imports (what mypy and
import-linter read, so types and the import contracts stay checked), and in the map given here
(what runs). tests/test_lazy_exports.py checks that the two agree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: Mapping[str, tuple[str, ...]]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: `where` maps a submodule to the names it exports.

    The first access imports the submodule and stores the name on the package, so later ones
    are plain attribute lookups; an unknown name is an AttributeError, as without this."""
    owner = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str) -> object:
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
