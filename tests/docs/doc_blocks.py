"""The shell blocks of the documentation, as the doc test reads them.

A fenced block whose info string is `sh`, `bash` or `console` is a block of commands:

- `sh` / `bash`: every line is a command (a trailing `# comment` is prose for the reader; a
  line ending in `\\` continues on the next). Nothing is said about its output.
- `console`: lines starting with `$ ` are commands; the lines after one, up to the next `$ `
  line or the end, are the output the doc promises (compared by `expected_matches`).

HTML comments right above the fence (invisible on GitHub) tell the test what it cannot see:

    <!-- doc-test: skip REASON -->          not run here (systemd, Kubernetes, a GPU, `make run`):
                                            its commands are checked for shell syntax only
    <!-- doc-test: let NAME = COMMAND -->   NAME in the block's commands is replaced by what
                                            COMMAND prints (a real approval id, a record id)
    <!-- doc-test: fails TEXT -->           the command containing TEXT must exit non-zero
    <!-- doc-test: skip-line TEXT REASON --> the command containing TEXT is checked, not run
    <!-- doc-test: env NAME=VALUE -->       the block's commands run with NAME=VALUE
    <!-- doc-test: needs model -->          the block needs the `tiny` pool served: the tour
                                            checks its syntax; tests/test_helpdesk.py runs
                                            the help desk's walkthrough on a scripted model
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Block",
    "Command",
    "DocTestError",
    "blocks_in",
    "expected_matches",
    "shell_syntax_error",
]

SHELL_FENCES = {"sh", "bash", "console", "shell"}
_FENCE = re.compile(r"^(\s*)```+\s*([\w-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")


class DocTestError(ValueError):
    """A doc-test directive or block that cannot be read (names the file and line)."""


@dataclass(frozen=True)
class Command:
    """One command of a block: its text, the line it starts on and the output the doc shows
    (None: the doc promises nothing about it)."""

    text: str
    line: int
    expected: list[str] | None = None


@dataclass
class Block:
    path: Path
    line: int  # the fence's line, 1-based
    lang: str
    commands: list[Command] = field(default_factory=list)
    skip: str | None = None
    needs: set[str] = field(default_factory=set)
    lets: dict[str, str] = field(default_factory=dict)
    fails: list[str] = field(default_factory=list)
    skip_lines: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks_in(path: Path) -> list[Block]:
    """Every shell block of a markdown file, in order, with the directives above it."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    directives: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _DIRECTIVE.match(line)
        if match:
            directives.append((i + 1, match.group(1)))
            i += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip():
                directives = []  # directives bind to the block right below them
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        lang = fence.group(2).lower()
        if lang in SHELL_FENCES:
            block = Block(path, i + 1, lang)
            for at, text in directives:
                _apply(block, text, f"{path.name}:{at}")
            body = lines[i + 1 : end]
            block.commands = (
                _console_commands(body, i + 2) if lang == "console" else _sh_commands(body, i + 2)
            )
            blocks.append(block)
        elif directives:
            raise DocTestError(f"{path.name}:{i + 1}: doc-test directive above a {lang!r} block")
        directives = []
        i = end + 1
    return blocks


def _apply(block: Block, text: str, where: str) -> None:
    verb, _, rest = text.partition(" ")
    rest = rest.strip()
    if verb == "skip":
        if not rest:
            raise DocTestError(f"{where}: `doc-test: skip` needs a reason")
        block.skip = rest
    elif verb == "needs":
        block.needs.add(rest)
    elif verb == "let":
        name, eq, command = rest.partition("=")
        if not eq or not name.strip() or not command.strip():
            raise DocTestError(f"{where}: `doc-test: let NAME = COMMAND`, got {text!r}")
        block.lets[name.strip()] = command.strip()
    elif verb == "fails":
        block.fails.append(_unquote(rest))
    elif verb == "skip-line":
        match = re.fullmatch(r'"([^"]+)"\s+(\S.*)|(\S+)\s+(\S.*)', rest)
        if match is None:
            raise DocTestError(f"{where}: `doc-test: skip-line TEXT REASON`, got {text!r}")
        quoted, reason, word, word_reason = match.groups()
        block.skip_lines[quoted or word] = reason or word_reason
    elif verb == "env":
        name, eq, value = rest.partition("=")
        if not eq:
            raise DocTestError(f"{where}: `doc-test: env NAME=VALUE`, got {text!r}")
        block.env[name.strip()] = _unquote(value.strip())
    else:
        raise DocTestError(f"{where}: unknown doc-test directive {verb!r}")


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


def _sh_commands(body: list[str], first: int) -> list[Command]:
    commands: list[Command] = []
    pending: list[str] = []
    start = first
    for n, line in enumerate(body, first):
        if not pending:
            start = n
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        pending.append(line)
        if line.rstrip().endswith("\\"):
            continue
        commands.append(Command("\n".join(pending), start))
        pending = []
    if pending:
        commands.append(Command("\n".join(pending), start))
    return commands


def _console_commands(body: list[str], first: int) -> list[Command]:
    commands: list[Command] = []
    text: str | None = None
    start = first
    output: list[str] = []
    for n, line in enumerate(body, first):
        if line.startswith("$ "):
            if text is not None:
                commands.append(Command(text, start, _trim(output)))
            text, start, output = line[2:], n, []
        elif text is not None:
            output.append(line)
    if text is not None:
        commands.append(Command(text, start, _trim(output)))
    return commands


def _trim(output: list[str]) -> list[str]:
    while output and not output[-1].strip():
        output.pop()
    return output


def shell_syntax_error(command: str) -> str | None:
    """What `bash -n` says about a command (None: it parses)."""
    import subprocess

    result = subprocess.run(
        ["bash", "-n"], input=command, capture_output=True, text=True, timeout=10
    )
    return result.stderr.strip() or None if result.returncode else None


# Output comparison. The doc's text is the expectation, read as a pattern:
#  - a line that is `...` or `…` alone stands for any number of lines (none included);
#  - `…` inside a line stands for any text;
#  - runs of blanks match any run of blanks (table columns widen with their contents);
#  - numbers, hex ids, uuids and timestamps match any value of the same shape, because pids,
#    run ids, ports, uptimes and times differ on every run;
#  - `/home/you/agentd` stands for the directory the commands run in.
_VARIABLE = re.compile(
    r"\d{4}-\d\d-\d\d[T ][\d:.]+Z?"  # a timestamp
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # a uuid
    r"|\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b"  # a hex id
    r"|\d+(?:\.\d+)*"  # a number, a version
)
_VARIABLE_PATTERN = {
    "timestamp": r"\d{4}-\d\d-\d\d[T ][\d:.]+Z?",
    "uuid": r"[0-9a-f-]{36}",
    "hex": r"[0-9a-f]{6,}",
    "number": r"\d+(?:\.\d+)*",
}


def _line_pattern(expected: str, home: str) -> re.Pattern[str]:
    parts: list[str] = []
    text = expected.strip().replace("/home/you/agentd", "\0HOME\0")
    for piece in re.split(r"(…|\0HOME\0|\s+)", text):
        if piece == "…":
            parts.append(".*")
        elif piece == "\0HOME\0":
            parts.append(re.escape(home))
        elif piece and piece.isspace():
            parts.append(r"\s+")
        elif piece:
            parts.append(_literal_with_variables(piece))
    return re.compile("".join(parts))


def _literal_with_variables(piece: str) -> str:
    out: list[str] = []
    last = 0
    for match in _VARIABLE.finditer(piece):
        out.append(re.escape(piece[last : match.start()]))
        value = match.group(0)
        if re.fullmatch(_VARIABLE_PATTERN["timestamp"], value):
            out.append(_VARIABLE_PATTERN["timestamp"])
        elif re.fullmatch(_VARIABLE_PATTERN["uuid"], value):
            out.append(_VARIABLE_PATTERN["uuid"])
        elif re.fullmatch(r"[0-9a-f]{8,}", value) and not value.isdigit():
            out.append(_VARIABLE_PATTERN["hex"])
        else:
            out.append(_VARIABLE_PATTERN["number"])
        last = match.end()
    out.append(re.escape(piece[last:]))
    return "".join(out)


def expected_matches(expected: list[str], actual: list[str], home: str) -> str | None:
    """None when `actual` (the command's output lines) is what `expected` shows; else the first
    place they part, said for the failure message."""
    actual = _trim(list(actual))
    patterns: list[re.Pattern[str] | None] = [
        None if line.strip() in ("...", "…") else _line_pattern(line, home) for line in expected
    ]

    def match(p: int, a: int) -> bool:  # backtracking over `...` lines
        while p < len(patterns):
            pattern = patterns[p]
            if pattern is None:
                return any(match(p + 1, rest) for rest in range(a, len(actual) + 1))
            if a >= len(actual) or not pattern.fullmatch(actual[a].strip()):
                return False
            p, a = p + 1, a + 1
        return a == len(actual)

    if match(0, 0):
        return None
    for n, pattern in enumerate(patterns):  # the first line that differs, for the message
        if pattern is None:
            break
        got = actual[n].strip() if n < len(actual) else "<no more output>"
        if not pattern.fullmatch(got):
            return f"line {n + 1}: expected {expected[n].strip()!r}, got {got!r}"
    return "the output differs after a `...` line"
