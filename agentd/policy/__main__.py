"""`python -m agentd.policy check DIR` and `python -m agentd.policy explain DIR SUB OBJ ACT [ARGS]
[--tainted]`.

`check` validates a policy directory and runs its golden tables (DIR/tests); `explain` prints the
decision for one request and every rule that bears on it. Exit status 0 when the policy is valid
and every golden case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._decision import DecisionPoint
from ._errors import PolicyError
from ._golden import run_golden_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentd.policy")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a policy and run its golden tables")
    check.add_argument("directory")
    explain = commands.add_parser("explain", help="explain the decision for one request")
    explain.add_argument("directory")
    explain.add_argument("subject")
    explain.add_argument("object")
    explain.add_argument("action")
    explain.add_argument("args", nargs="?", default=None, help="arguments as a JSON object")
    explain.add_argument(
        "--tainted", action="store_true", help="as asked by a run tainted by untrusted content"
    )
    options = parser.parse_args(argv)
    try:
        point = DecisionPoint.from_dir(options.directory)
        if options.command == "check":
            report = run_golden_tables(point.policy.files.tests, point)
            print(report.render())
            return 0 if report.ok else 1
        args = json.loads(options.args) if options.args else None
        if args is not None and not isinstance(args, dict):
            print("ARGS must be a JSON object", file=sys.stderr)
            return 1
        explanation = point.explain(
            options.subject, options.object, options.action, args, tainted=options.tainted
        )
        print(explanation.render())
        return 0
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    except json.JSONDecodeError as exc:
        print(f"ARGS is not JSON: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
