"""Test harness: real nats-server and real agentd processes on free ports.

A daemon is started as `python -m agentd.cli.agentd run` with NOTIFY_SOCKET pointing at a unix
datagram socket the test owns, so the test waits for READY=1 (an event), never a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NATS_SERVER = Path(sys.executable).parent / "nats-server"
# credentials of running test daemons by URL: the default admin's and the daemon's own
_CREDENTIALS: dict[str, tuple[Path, Path]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live process whose ancestry leads to `pid` (via /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return [p for p in found if pid_alive(p)]


class NotifySocket:
    """A unix datagram socket that records sd_notify messages in order, read by a thread (as
    systemd reads it) so the sender's queue never fills."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append(data)
                self._changed.notify_all()

    def wait_for(self, field: str, timeout_s: float) -> list[str]:
        """Block until a datagram containing `field` (e.g. READY=1) arrives; return all so far."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(field in m.split("\n") for m in self.messages), timeout_s
            )
            if not found:
                raise TimeoutError(f"no {field} within {timeout_s}s; got {self.messages}")
            return list(self.messages)

    def close(self) -> None:
        self._closed = True
        self._reader.join(1)
        self.sock.close()


def write_config(
    directory: Path,
    *,
    port: int | None = None,
    agents_dir: Path | None = None,
    extra: str = "",
    drain_grace_s: float = 5.0,
    enabled: list[str] | None = None,
    policy: str = "off",
) -> Path:
    """A config for a test daemon: embedded NATS on a free port, state under `directory`.
    Without `agents_dir` it runs the examples' echo agent only (or `enabled` of them)."""
    port = port or free_port()
    agents = agents_dir or REPO / "agents"
    if agents_dir is None and enabled is None:
        enabled = ["echo"]
    if enabled is not None:
        extra = f"enabled = {json.dumps(enabled)}\n{extra}"
    # metrics on a free port unless the test sets [metrics]: many daemons run at once
    metrics = "" if "[metrics]" in extra else "\n[metrics]\nport = 0\n"
    text = f"""
[daemon]
state_dir = "{directory / "state"}"
drain_grace_s = {drain_grace_s}
log_level = "debug"

[bus.embedded]
port = {port}
{metrics}
[policy]
mode = "{policy}"
dir = "{REPO / "policies"}"

[agents]
dir = "{agents}"
heartbeat_s = 1.0
{extra}
"""
    path = directory / "agentd.toml"
    path.write_text(text)
    return path


class DaemonProcess:
    """A real `agentd run` in its own process group."""

    def __init__(
        self, config: Path, *, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.config = config
        self.dir = config.parent
        self.notify = NotifySocket(Path(tempfile.mkdtemp(prefix="agentd-notify-")))
        self.stderr_path = self.dir / f"agentd-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        full_env.pop("AGENTD_CONFIG", None)
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            # `prefix` runs it elsewhere, e.g. `ip netns exec NS` (another "host")
            [*prefix, sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "run"],
            env=full_env,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = self._url()
        self.state_dir = self._state_dir()
        _CREDENTIALS[self.url] = (self.admin_creds, self.daemon_creds)

    def _toml(self) -> dict[str, Any]:
        import tomllib

        data: dict[str, Any] = tomllib.loads(self.config.read_text())
        return data

    def _url(self) -> str:
        data = self._toml()
        port = data.get("bus", {}).get("embedded", {}).get("port", 4222)
        return str(data.get("bus", {}).get("url") or f"nats://127.0.0.1:{port}")

    def _state_dir(self) -> Path:
        state = Path(self._toml().get("daemon", {}).get("state_dir", ".agentd"))
        return state if state.is_absolute() else self.dir / state

    @property
    def admin_creds(self) -> Path:
        """The default admin's credentials (operator `local`), written by the daemon."""
        return self.state_dir / "credentials" / "operators" / "local.creds"

    @property
    def daemon_creds(self) -> Path:
        """The daemon's own credentials: full rights on its NATS (tests that play any part)."""
        return self.state_dir / "credentials" / "daemon.creds"

    def nats_options(self) -> dict[str, Any]:
        """nats.connect() keyword arguments to connect with the daemon's own rights."""
        return nats_options(self.url)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        try:
            self.notify.wait_for("READY=1", timeout_s)
        except TimeoutError:
            raise AssertionError(f"daemon not ready:\n{self.log()}") from None

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def agentctl(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run agentctl as the default admin, or as `--operator NAME` (whose credentials an
        admin issues first, without a role: policy.csv says what NAME may do)."""
        if "--operator" in args:
            name = args[args.index("--operator") + 1]
            if not (self.admin_creds.parent / f"{name}.creds").exists():
                issued = self._agentctl("operators", "add", name, timeout_s=timeout_s)
                assert issued.returncode == 0, issued.stderr
        return self._agentctl(*args, timeout_s=timeout_s)

    def _agentctl(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        config = ["--config", str(self.config)]
        return subprocess.run(
            [sys.executable, "-m", "agentd.cli.agentctl", "--url", self.url, *config, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"daemon did not stop within {timeout_s}s:\n{self.log()}"
            ) from None
        return code

    def kill(self) -> None:
        """SIGKILL the daemon's whole process group (test cleanup)."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._stderr.close()
        self.notify.close()


def admin_credentials(url: str) -> Any:
    """The default admin's Credentials for the test daemon at `url` (None: identity off)."""
    from agentd.bus import Credentials

    admin = _CREDENTIALS.get(url, (None, None))[0]
    return Credentials.load(admin) if admin is not None and admin.exists() else None


def nats_options(url: str) -> dict[str, Any]:
    """nats.connect() keyword arguments with the daemon's own rights at `url` (none if off)."""
    from agentd.bus import Credentials

    own = _CREDENTIALS.get(url, (None, None))[1]
    if own is None or not own.exists():
        return {}
    return Credentials.load(own).connect_options()


@contextmanager
def running_daemon(config: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(config, **kwargs)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.close()


@contextmanager
def nats_server(store: Path, port: int | None = None) -> Iterator[str]:
    """A bare nats-server with JetStream, as nats.py's own tests run one."""
    port = port or free_port()
    proc = subprocess.Popen(
        [str(NATS_SERVER), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


TEST_AGENTS = REPO / "tests" / "agents"


async def send_and_collect(
    url: str,
    agent: str,
    payloads: list[dict[str, Any]],
    *,
    conversations: list[str] | None = None,
    timeout_s: float = 60.0,
) -> dict[str, dict[str, Any]]:
    """Send each payload through the control plane with a reply subject; return the run
    results by message id once every message has one (or raise on timeout)."""
    import json as _json

    import anyio

    from agentd.bus import new_id
    from agentd.cli._client import ControlClient

    batch = new_id()[:8]
    results: dict[str, dict[str, Any]] = {}
    done = anyio.Event()
    # the whole set up front: a partial set could be "complete" while messages are still going out
    expected = {f"{batch}-{i}" for i in range(len(payloads))}

    async with ControlClient(url, timeout_s=30, credentials=admin_credentials(url)) as ctl:

        async def on_reply(msg: Any) -> None:
            result = _json.loads(msg.data)
            results.setdefault(result["message_id"], result)
            if expected <= set(results):
                done.set()

        sub = await ctl.nc.subscribe(f"agentd.reply.ctl.t{batch}.*", cb=on_reply)
        for i, payload in enumerate(payloads):
            args: dict[str, Any] = {
                "to": agent,
                "payload": payload,
                "reply_to": f"agentd.reply.ctl.t{batch}.{i}",
                "id": f"{batch}-{i}",
            }
            if conversations:
                args["conversation_id"] = conversations[i]
            await ctl.call("send", args)
        if not expected <= set(results):
            with anyio.fail_after(timeout_s):
                await done.wait()
        await sub.unsubscribe()
    return results


async def ledger_entries(url: str, ids: Any = None) -> dict[str, dict[str, Any]]:
    """Finished runs in the run ledger (the `agentd_runs` bucket), by message id: the given ids
    (read one by one, exactly) or every key the bucket lists."""
    import json as _json

    import nats
    from nats.js.errors import KeyNotFoundError, NoKeysError

    nc = await nats.connect(url, **nats_options(url))
    try:
        kv = await nc.jetstream().key_value("agentd_runs")
        try:  # finished runs are `run.<agent>.<message id>`
            keys = {k.split(".", 2)[2]: k for k in await kv.keys() if k.startswith("run.")}
        except NoKeysError:
            return {}
        entries = {}
        for message_id in keys if ids is None else ids:
            try:
                entry = await kv.get(keys[message_id])
            except (KeyError, KeyNotFoundError):
                continue
            entries[message_id] = _json.loads(entry.value or b"{}")
        return entries
    finally:
        await nc.close()


def decision_records(state_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records in a daemon's decision log (read-only; the daemon may still be writing)."""
    import json as _json
    import sqlite3

    db = sqlite3.connect(f"file:{state_dir / 'decisions.db'}?mode=ro", uri=True)
    try:
        query = "SELECT body FROM records" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq"
        rows = db.execute(query, (kind,) if kind else ()).fetchall()
    finally:
        db.close()
    return [_json.loads(body) for (body,) in rows]


def records_when(
    state_dir: Path,
    kind: str,
    ready: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 15.0,
) -> list[dict[str, Any]]:
    """The records of one kind once `ready` holds for them; replicas' records reach the
    log after the reply that caused them, so a test reads them when they have arrived."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = decision_records(state_dir, kind)
        if ready(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)
