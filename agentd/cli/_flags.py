"""What agentctl and agentd share on the command line: global flags accepted before or after the
subcommand, and output that ends quietly when the reader goes away (`agentctl ps | head -1`).

Global flags are declared once, on the top-level parser, by a function `add(parser, shared)`.
`share_global_flags` then adds the same flags to every subcommand parser, however deep, with
the default `argparse.SUPPRESS`: a flag given after the subcommand overrides the one before it,
and a flag not given there leaves the top-level value (or its default) alone. A verb added later
with `sub.add_parser(...)` gets the global flags without doing anything, as long as the parser
is built before `share_global_flags` runs; an option a subcommand declares itself (same option
string) keeps the subcommand's meaning there.

This module imports argparse and the standard library only: every invocation pays for it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["EXIT_BROKEN_PIPE", "is_broken_pipe", "quiet_broken_pipe", "share_global_flags"]

# what a shell reports for a CLI killed by SIGPIPE (`cat big | head -1`): 128 + 13
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

AddFlags = Callable[[argparse.ArgumentParser, bool], None]


def share_global_flags(parser: argparse.ArgumentParser, add: AddFlags) -> None:
    """Add the global flags (`add(p, shared=True)`) to every subcommand parser under `parser`.

    The flags are built once, on a template, and the same action objects are added to each
    subcommand (as argparse's own `parents=` does): building them anew for each of agentctl's
    forty parsers cost a third of its parser's construction, on every invocation."""
    template = argparse.ArgumentParser(add_help=False)
    add(template, True)
    shared = template._actions
    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for child in action.choices.values():
                if id(child) in seen:  # aliases share a parser
                    continue
                seen.add(id(child))
                for flag in shared:
                    # an option the subcommand declares itself keeps its meaning there
                    if not any(o in child._option_string_actions for o in flag.option_strings):
                        child._add_action(flag)
                walk(child)

    walk(parser)


def is_broken_pipe(exc: BaseException) -> bool:
    """A BrokenPipeError, alone or as every leaf of an exception group (anyio task groups)."""
    if isinstance(exc, BrokenPipeError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_broken_pipe(e) for e in exc.exceptions)
    return False


def quiet_broken_pipe() -> int:
    """The reader of stdout went away: point stdout at /dev/null so the interpreter's last flush
    cannot fail again, and return the status a shell shows for a CLI killed by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no stdout file descriptor at all: nothing left to flush
        pass
    return EXIT_BROKEN_PIPE
