"""Running the documentation's commands as a new user would: a scratch copy of the repository,
the documented default configuration on free ports, one real daemon, every shell block in order.

The scratch copy is laid out like a checkout after `make run`: `.venv/bin/agentctl`,
`.venv/bin/agentd` and `.venv/bin/python` run this checkout's code with the test's interpreter,
and `.venv/bin` leads PATH, so `agentctl ...` and `.venv/bin/agentctl ...` both work. The
config is agentd.toml itself with the ports moved to free ones (the commands' `127.0.0.1:9464`
follows the metrics port) and, unless the tour serves the tiny model, without `[models.tiny]`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.docs.doc_blocks import Block, Command, expected_matches, shell_syntax_error
from tests.harness import REPO, free_port

__all__ = ["Tour", "make_scratch"]

COPIED = ["README.md", "agentd.toml", "agents", "docs", "policies", "tools", "mcp_servers"]
# a command that follows something live runs this long, then is stopped (still running: ok)
FOLLOW_S = 2.0
# never run on the test host, whatever the doc says: such a block must be marked skip
_HOST_CHANGING = re.compile(r"(^|[;&|(]\s*)(sudo|systemctl|journalctl|kubectl|helm|make)\b", re.M)
_FOLLOWS = re.compile(r"(\s-f\b|--follow\b|\btop\b(?!.*--iterations))")
_MODELS_TINY = re.compile(r"^\[models\.tiny\]\n(?:(?!\[|# The one line).*\n)*", re.MULTILINE)


@dataclass
class Scratch:
    root: Path
    nats_port: int
    metrics_port: int


def make_scratch(root: Path) -> Scratch:
    """The repository's user-facing files under `root`, with the default config on free ports
    and without the `tiny` pool (a vLLM server: blocks that need it are marked `needs model`)."""
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    install_commands(root)
    nats_port, metrics_port = free_port(), free_port()
    text = (root / "agentd.toml").read_text()
    text = _replace_once(text, "port = 4222\n", f"port = {nats_port}\n")
    text = _replace_once(text, "port = 9464\n", f"port = {metrics_port}\n")
    text = _MODELS_TINY.sub("", text, count=1)
    assert "[models.tiny]" not in text, "agentd.toml's [models.tiny] moved: update doc_tour"
    (root / "agentd.toml").write_text(text)
    return Scratch(root, nats_port, metrics_port)


def install_commands(root: Path) -> None:
    """`.venv/bin/agentctl`, `agentd` and `python` under `root`, running this checkout's code."""
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in (("agentctl", "agentd.cli.agentctl"), ("agentd", "agentd.cli.agentd")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n')
        script.chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"agentd.toml should hold {old!r} once: update doc_tour"
    return text.replace(old, new)


@dataclass
class Tour:
    """Runs blocks in the scratch checkout; collects every disagreement instead of stopping."""

    scratch: Scratch
    model: bool = False  # the tiny pool is served (blocks marked `needs model` run)
    failures: list[str] = field(default_factory=list)
    ran: int = 0
    timings: list[tuple[float, str]] = field(default_factory=list)
    checked: int = 0

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "NOTIFY_"))}
        env["PATH"] = f"{self.scratch.root / '.venv' / 'bin'}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(REPO)
        env["COLUMNS"] = "200"
        return env

    def localize(self, command: str) -> str:
        command = command.replace("127.0.0.1:9464", f"127.0.0.1:{self.scratch.metrics_port}")
        return command.replace("127.0.0.1:4222", f"127.0.0.1:{self.scratch.nats_port}")

    def run_block(self, block: Block) -> None:
        missing = block.needs - ({"model"} if self.model else set())
        skip = block.skip or (f"needs {', '.join(sorted(missing))}" if missing else None)
        values: dict[str, str] = {}
        for command in block.commands:
            if skip is not None or any(text in command.text for text in block.skip_lines):
                self._check_syntax(block, command)
            else:
                self._run(block, command, values)

    def _let(self, block: Block, command: Command, values: dict[str, str]) -> bool:
        """Work out the values the command names (a `let` runs right before its first use, so
        it may wait for what the commands before it set going)."""
        for name, shell in block.lets.items():
            if name in values or not re.search(rf"\b{re.escape(name)}\b", command.text):
                continue
            result = self._shell(self.localize(shell), block.env, timeout_s=120)
            value = result.stdout.strip()
            if result.returncode or not value:
                self.failures.append(
                    f"{block.path.name}:{command.line}: `doc-test: let {name}` printed "
                    f"{value!r} (exit {result.returncode}): {result.stderr.strip()[-500:]}"
                )
                return False
            values[name] = value
        return True

    def _check_syntax(self, block: Block, command: Command) -> None:
        self.checked += 1
        if problem := shell_syntax_error(command.text):
            self.failures.append(f"{block.path.name}:{command.line}: not valid shell: {problem}")

    def _run(self, block: Block, command: Command, values: dict[str, str]) -> None:
        self.ran += 1
        if not self._let(block, command, values):
            return
        text = self.localize(command.text)
        for name, value in values.items():
            text = re.sub(rf"\b{re.escape(name)}\b", value, text)
        where = f"{block.path.name}:{command.line}: `{command.text}`"
        if _HOST_CHANGING.search(text):
            self.failures.append(f"{where}: changes the host; mark its block doc-test: skip")
            return
        must_fail = any(marker in command.text for marker in block.fails)
        if _FOLLOWS.search(text):
            self._follow(where, text, block.env)
            return
        started = time.monotonic()
        result = self._shell(text, block.env, timeout_s=90)
        self.timings.append((time.monotonic() - started, where))
        output = (result.stdout + result.stderr).splitlines()
        if must_fail and result.returncode == 0:
            self.failures.append(f"{where}: the doc says it is refused, but it exited 0")
        elif not must_fail and result.returncode != 0:
            tail = "\n    ".join(output[-15:])
            self.failures.append(f"{where}: exit {result.returncode}\n    {tail}")
            return
        if command.expected is not None and (
            problem := expected_matches(command.expected, output, str(self.scratch.root))
        ):
            shown = "\n    ".join(output[:40])
            self.failures.append(f"{where}: output differs from the doc ({problem}):\n    {shown}")

    def _follow(self, where: str, text: str, env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", text],
            cwd=self.scratch.root,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + FOLLOW_S
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=10)
            return
        output, _ = proc.communicate()
        if proc.returncode != 0:
            self.failures.append(f"{where}: exit {proc.returncode}\n    {output[-1500:]}")

    def _shell(
        self, text: str, env: dict[str, str], *, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["bash", "-o", "pipefail", "-c", text],
                cwd=self.scratch.root,
                env={**self.env, **env},
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return subprocess.CompletedProcess(text, 124, out, f"timed out after {timeout_s}s")
