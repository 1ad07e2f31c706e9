"""A real vLLM server (CPU build) in its own process group, for tests and benchmarks.

Not part of agentd: the supervisor will own vLLM processes. This is the smallest thing that starts
one from `agentd.inference.vllm_command`, waits for it, measures it and stops every process it
spawned (API server, engine core, worker, resource tracker).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agentd.inference import vllm_command

DEFAULT_VLLM_PYTHON = Path("/work/.venv-vllm/bin/python")


def vllm_python() -> Path:
    """The vLLM environment's interpreter: $AGENTD_VLLM_PYTHON, else the default path."""
    return Path(os.environ.get("AGENTD_VLLM_PYTHON", str(DEFAULT_VLLM_PYTHON)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class VllmServer:
    """One running server; `stop()` is safe to call twice."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    startup_s: float = 0.0
    stop_s: float | None = None
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls,
        model_dir: Path,
        work_dir: Path,
        *,
        served_name: str = "tiny",
        cpu_threads_bind: str = "1",
        kv_cache_bytes: int = 64 * 2**20,
        startup_timeout_s: float = 240.0,
        max_num_seqs: int = 8,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> VllmServer:
        port = free_port()
        argv, env = vllm_command(
            vllm_python(),
            model_dir,
            served_name,
            "127.0.0.1",
            port,
            cache_dir=work_dir / "vllm-cache",
            base_env={**os.environ, **(env or {})},
            cpu_threads_bind=cpu_threads_bind,
            kv_cache_bytes=kv_cache_bytes,
            max_num_seqs=max_num_seqs,
            extra_args=extra_args,
        )
        log_path = work_dir / "vllm.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches every child
            )
        server = cls(process, f"http://127.0.0.1:{port}", log_path)
        try:
            server._wait_healthy(started + startup_timeout_s)
        except BaseException:
            server.stop()
            raise
        server.startup_s = time.monotonic() - started
        return server

    def _wait_healthy(self, deadline: float) -> None:
        # vLLM offers no readiness event to await: poll /health, which answers 200 once the
        # engine is up.
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"vLLM exited with {self.process.returncode} during startup:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        raise TimeoutError("vLLM did not answer /health in time:\n" + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of every live process in the server's process group."""
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for pid in group_members(self.process.pid):
            try:
                statm = Path(f"/proc/{pid}/statm").read_text().split()
            except OSError:
                continue
            total += int(statm[1]) * page
        return total

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `grace_s`."""
        if self._stopped:
            return
        self._stopped = True
        pgid = self.process.pid
        started = time.monotonic()
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
            _wait_group_gone(pgid, started + grace_s)
        except (subprocess.TimeoutExpired, TimeoutError):
            _signal_group(pgid, signal.SIGKILL)
            self.process.wait()
            return
        self.stop_s = time.monotonic() - started


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, deadline: float) -> None:
    # The leader has exited; its children (engine core, worker) exit on their own shortly
    # after, and nothing announces it.
    while group_members(pgid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes of group {pgid} still alive")
        time.sleep(0.1)
