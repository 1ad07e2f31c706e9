"""The sandbox's exec wrapper: `python -I -S .../agentd/sandbox/_exec.py -- PROGRAM ARGS...`.

Run by the daemon in place of an agent replica. Isolated (-I) and without site (-S), it imports
nothing from site-packages and no .pth file runs: it reads the plan from AGENTD_SANDBOX, sets
the resource limits and no-new-privs, enters the Landlock domain, and execs PROGRAM, which (and
everything it starts) stays inside. Mode enforce: a plan it cannot apply stops the replica here
(exit 126, the reason on stderr, which is the replica's log); warn: it says so and runs on.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from agentd.sandbox._landlock import kernel_abi, no_new_privs, restrict_self, set_limits
    from agentd.sandbox._plan import ENV_PLAN, RIGHTS, SandboxPlan
    from agentd.sandbox._privileges import drop_bounding_set, drop_capabilities
    from agentd.sandbox._users import reveal, switch_user

    if len(argv) < 2 or argv[0] != "--":
        print("usage: python -I -S _exec.py -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    program = argv[1:]
    env = dict(os.environ)
    text = env.pop(ENV_PLAN, "")
    try:
        plan = SandboxPlan.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"agentd.sandbox: no valid plan in ${ENV_PLAN} ({exc}): not started", file=sys.stderr)
        return 126
    abi = min(plan.abi, kernel_abi())
    try:
        set_limits(plan.limits)
        if plan.uid is not None:
            # while still root: the replica's own mount namespace (its granted paths reachable
            # by its uid), then the uid; the capabilities go with uid 0
            cwd = os.getcwd()
            reveal([p for p, _ in plan.fs], plan.uid, plan.gid or plan.uid, plan.aliases)
            drop_bounding_set()
            switch_user(plan.uid, plan.gid or plan.uid)
            os.chdir(cwd)
        drop_capabilities()
        if abi >= 1:
            restrict_self(
                abi,
                fs_rules=[(path, RIGHTS[right]) for path, right in plan.fs],
                connect_ports=list(plan.connect_ports),
                scope=plan.scope,
            )
        else:
            no_new_privs()
    except OSError as exc:
        if plan.mode == "enforce":
            print(
                f"agentd.sandbox: cannot enter the sandbox ({exc}); mode enforce: not started",
                file=sys.stderr,
            )
            return 126
        print(f"agentd.sandbox: WARNING running unsandboxed: {exc} (mode warn)", file=sys.stderr)
        abi = 0
    applied = f"landlock-abi={abi} digest={plan.digest} mode={plan.mode} uid={os.getuid()}"
    env["AGENTD_SANDBOX_APPLIED"] = applied
    missing = "; ".join(plan.missing) or "none"
    print(
        f"agentd.sandbox: {applied} rules={len(plan.fs)} "
        f"connect_ports={list(plan.connect_ports)} missing: {missing}",
        file=sys.stderr,
    )
    sys.stderr.flush()
    try:
        os.execve(program[0], program, env)
    except OSError as exc:
        print(f"agentd.sandbox: cannot exec {program[0]}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    # -I leaves the script's folder off sys.path: import agentd from the tree this file is in
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    sys.exit(main(sys.argv[1:]))
