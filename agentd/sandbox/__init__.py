"""Kernel containment of the processes agentd starts for agents (docs/sandbox.md).

Landlock rules for the filesystem and TCP, signal and abstract-socket scoping, no-new-privs,
no capabilities (even as root) and resource limits, applied by an exec wrapper before the
replica's interpreter imports anything; every agentd process is not dumpable. Standard library
only: the wrapper runs with no site-packages on its path.
"""

import os
import sys

from agentd.sandbox._landlock import LandlockError, kernel_abi
from agentd.sandbox._plan import ENV_PLAN, SandboxPlan, build_plan, missing_protections
from agentd.sandbox._privileges import capabilities_in_effect, drop_capabilities, set_undumpable
from agentd.sandbox._users import can_mount, can_switch_users

__all__ = [
    "ENV_PLAN",
    "LandlockError",
    "SandboxPlan",
    "build_plan",
    "can_mount",
    "can_switch_users",
    "capabilities_in_effect",
    "drop_capabilities",
    "kernel_abi",
    "missing_protections",
    "set_undumpable",
    "wrapper_argv",
]


def wrapper_argv(program: list[str]) -> list[str]:
    """`program` run under the exec wrapper (the plan goes in the environment, ENV_PLAN)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_exec.py")
    return [sys.executable, "-I", "-S", script, "--", *program]
