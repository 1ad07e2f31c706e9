"""`agentd run`: the daemon's lifecycle.

capture signals -> start services in dependency order, each ready before the next -> serve ->
drain within the grace period -> force. Signal handlers only set flags (uvicorn's model); a second
SIGINT forces at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

import anyio
from anyio.abc import TaskGroup
from nats.aio.client import Client

import agentd
from agentd.bus import (
    Message,
    Subjects,
    connect,
    embedded_url,
    ensure_streams,
    nats_server_argv,
    nats_server_config,
    wait_until_listening,
)
from agentd.config import LoadedConfig, load_config
from agentd.control import ControlPlane, ControlRequest
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._journal import DecisionJournal
from agentd.daemon._logging import setup_logging
from agentd.daemon._statedir import StateDirLock
from agentd.daemon._systemd import SystemdNotifier
from agentd.errors import BusUnavailable, ConfigError, ControlError, WorkerCrashed
from agentd.router import Router
from agentd.supervisor import ChildEvent, ChildInfo, ChildSpec, RestartPolicy, Supervisor

__all__ = ["Daemon"]

log = logging.getLogger("agentd.daemon")

NATS_CHILD = "nats-server"


class Daemon:
    """The agentd process: one root task group holding every service."""

    def __init__(self, loaded: LoadedConfig, *, notifier: SystemdNotifier | None = None) -> None:
        self._loaded = loaded
        self.config = loaded.config
        self.subjects = Subjects(self.config.bus.prefix)
        self.notifier = notifier or SystemdNotifier()
        self.state_dir = self.config.daemon.state_dir
        self.started_at = time.time()
        self.exit_code = 0
        self._stop = anyio.Event()
        self._forced = False
        self._services: dict[str, str] = {}
        self._nc: Client | None = None
        self._supervisor = Supervisor(
            on_event=self._on_child_event, registry_path=self.state_dir / "children.json"
        )
        self._journal: DecisionJournal | None = None
        self._router: Router | None = None
        self._control: ControlPlane | None = None
        self._fleet: AgentFleet | None = None
        self.nats_url = self.config.bus.url or embedded_url(self.config.bus.embedded)

    # lifecycle
    async def run(self) -> int:
        with StateDirLock(self.state_dir):
            self._journal = DecisionJournal(self.state_dir / "decisions.jsonl")
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._handle_signals, tg)
                    await self._start(tg)
                    ready_after = time.time() - self.started_at
                    log.info("agentd ready in %.2fs; NATS at %s", ready_after, self.nats_url)
                    self.notifier.ready(
                        f"serving {len(self._fleet.names if self._fleet else [])} agents"
                    )
                    if self.notifier.watchdog_interval_s:
                        tg.start_soon(self._watchdog)
                    await self._stop.wait()
                    await self._shutdown(tg)
            finally:
                self._journal.close()
        return self.exit_code

    def request_stop(self) -> None:
        self._stop.set()

    async def _start(self, tg: TaskGroup) -> None:
        self._step("supervisor", "starting")
        await tg.start(self._supervisor.run)
        self._step("supervisor", "running")
        if self.config.bus.url is None:
            self._step("nats", "starting embedded nats-server")
            await self._start_embedded_nats()
            self._step("nats", "running")
        self._step("bus", f"connecting to {self.nats_url}")
        self._nc = nc = await connect(
            self.nats_url,
            name="agentd",
            timeout_s=self.config.bus.connect_timeout_s,
            on_disconnected=self._bus_down,
            on_reconnected=self._bus_up,
        )
        js = nc.jetstream()
        await ensure_streams(js, self.subjects, self.config.inbox)
        self._step("bus", "connected")
        self._fleet = AgentFleet(nc, js, self._supervisor, self.config, self.nats_url)
        self._router = Router(
            nc,
            js,
            self.subjects,
            known_agents=lambda: self._fleet.names if self._fleet else set(),
            on_decision=self._record,
        )
        await tg.start(self._router.run)
        self._step("router", "running")
        self._control = ControlPlane(nc, self.subjects)
        self._register_verbs(self._control)
        await tg.start(self._control.run)
        self._step("control", "running")
        self._step("agents", "starting")
        await tg.start(self._fleet.run)
        self._step("agents", "running")

    async def _start_embedded_nats(self) -> None:
        cfg = self.config.bus.embedded
        store = cfg.store_dir or self.state_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.state_dir / "nats-server.conf"
        conf.write_text(nats_server_config(cfg, store))

        async def listening(info: ChildInfo) -> None:
            await wait_until_listening(cfg.host, cfg.port, timeout_s=cfg.ready_timeout_s)

        spec = ChildSpec(
            name=NATS_CHILD,
            argv=nats_server_argv(cfg, conf),
            restart=RestartPolicy(max_restarts=20, window_s=60.0, backoff_initial_s=0.05),
            stop_grace_s=5.0,
            ready=listening,
            ready_timeout_s=cfg.ready_timeout_s,
            log_path=self.state_dir / "logs" / "nats-server.log",
        )
        try:
            await self._supervisor.start(spec)
        except WorkerCrashed as exc:
            raise BusUnavailable(
                f"the embedded nats-server did not start on {cfg.host}:{cfg.port}: {exc}. "
                f"Is the port in use? Set [bus.embedded].port or [bus].url. "
                f"Its log: {self.state_dir / 'logs' / 'nats-server.log'}"
            ) from exc

    async def _shutdown(self, tg: TaskGroup) -> None:
        grace = self.config.daemon.drain_grace_s
        self.notifier.stopping("draining")
        log.info("draining (grace %.1fs)", grace)
        with anyio.move_on_after(grace + 5.0) as scope:
            if self._fleet:
                await self._fleet.shutdown()
            for service in (self._control, self._router):
                if service:
                    await service.shutdown()
            if self._nc is not None:
                await self._nc.drain()
            if self.config.bus.url is None:
                await self._supervisor.stop(NATS_CHILD)
            await self._supervisor.shutdown()
        if scope.cancelled_caught:
            log.error("drain did not finish within %.1fs; forcing", grace + 5.0)
            self._force_kill()
        tg.cancel_scope.cancel()
        log.info("stopped")

    def _force_kill(self) -> None:
        for child in self._supervisor.children():
            if child.pid:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)

    async def _handle_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                elif self._stop.is_set() and signum == signal.SIGINT:
                    log.warning("second SIGINT: forcing exit")
                    self._forced = True
                    self.exit_code = 130
                    self._force_kill()
                    tg.cancel_scope.cancel()
                    return
                else:
                    log.info("%s received: shutting down", signal.Signals(signum).name)
                    self._stop.set()

    def _reload(self) -> None:
        """SIGHUP: apply what can change live, log what needs a restart."""
        try:
            fresh = load_config(self._loaded.path)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration:\n%s", exc)
            return
        old, new = self.config, fresh.config
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
            log.info("log level is now %s", new.daemon.log_level)
        live = old.model_copy(
            update={"daemon": old.daemon.model_copy(update={"log_level": new.daemon.log_level})}
        )
        restart_needed = [
            section
            for section in ("daemon", "bus", "inbox", "agents")
            if getattr(new, section) != getattr(live, section)
        ]
        for section in restart_needed:
            log.warning("[%s] changed; it takes effect at the next restart", section)
        self.config = live
        self._record({"kind": "config.reload", "restart_needed": restart_needed})

    async def _watchdog(self) -> None:
        """WATCHDOG=1 from the event loop itself, after a self-check; a wedged loop misses it."""
        interval = self.notifier.watchdog_interval_s or 1.0
        while True:
            if self._healthy():
                self.notifier.watchdog()
            else:
                log.error("self-check failed; withholding the watchdog ping")
            await anyio.sleep(interval)

    def _healthy(self) -> bool:
        return self._nc is not None and not self._nc.is_closed

    # events and decisions
    def _step(self, service: str, state: str) -> None:
        self._services[service] = state
        self.notifier.status(f"{service}: {state}")
        log.debug("%s: %s", service, state)

    def _record(self, entry: dict[str, Any]) -> None:
        if self._journal is not None:
            self._journal.record(entry)

    async def _on_child_event(self, event: ChildEvent) -> None:
        body = {
            "kind": f"child.{event.kind}",
            "child": event.name,
            "pid": event.pid,
            "exit_code": event.exit_code,
            "signal": event.signal,
            "reason": event.reason,
            "restarts": event.restarts,
            "ts": event.at,
        }
        self._record(body)
        nc = self._nc
        if nc is not None and nc.is_connected:
            try:
                await nc.publish(self.subjects.event(event.kind), json.dumps(body).encode())
            except Exception as exc:
                log.debug("event not published: %s", exc)

    async def _bus_down(self) -> None:
        self._services["bus"] = "reconnecting"
        if self._fleet:
            self._fleet.bus_down()

    async def _bus_up(self) -> None:
        self._services["bus"] = "connected"
        if self._fleet:
            self._fleet.bus_up()

    # control verbs
    def _register_verbs(self, control: ControlPlane) -> None:
        control.register("status", self._ctl_status)
        control.register("ps", self._ctl_ps)
        control.register("send", self._ctl_send)

    async def _ctl_status(self, request: ControlRequest) -> dict[str, Any]:
        return {
            "version": agentd.__version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "nats_url": self.nats_url,
            "embedded_nats": self.config.bus.url is None,
            "state_dir": str(self.state_dir),
            "config": self._loaded.source,
            "services": dict(self._services),
            "agents": sorted(self._fleet.names) if self._fleet else [],
            "spec_errors": self._fleet.spec_errors if self._fleet else [],
        }

    async def _ctl_ps(self, request: ControlRequest) -> list[dict[str, Any]]:
        return self._fleet.ps() if self._fleet else []

    async def _ctl_send(self, request: ControlRequest) -> dict[str, Any]:
        args = dict(request.args)
        to = args.pop("to", None)
        if not isinstance(to, str) or not to:
            raise ControlError("bad_request", "send needs 'to', the name of an agent")
        unknown = set(args) - {"payload", "conversation_id", "reply_to", "id"}
        if unknown:
            raise ControlError("bad_request", f"send does not take {sorted(unknown)}")
        body: dict[str, Any] = {"from": f"operator:{request.operator}", "to": to, **args}
        try:
            message = Message.model_validate(body)
        except ValueError as exc:
            raise ControlError("bad_request", f"malformed message: {exc}") from None
        if self._router is None:
            raise ControlError("unavailable", "the router is not running yet")
        routed = await self._router.route(message)
        self._record(
            {"kind": "ctl.send", "operator": request.operator, "message_id": message.id, "to": to}
        )
        return {
            "message_id": routed.message_id,
            "to": to,
            "seq": routed.seq,
            "duplicate": routed.duplicate,
            "conversation_id": message.conversation_id,
        }


def run_daemon(loaded: LoadedConfig, *, log_format: str | None = None) -> int:
    """Entry point used by `agentd run`."""
    cfg = loaded.config.daemon
    setup_logging(cfg.log_level, log_format or cfg.log_format)
    daemon = Daemon(loaded)
    return anyio.run(daemon.run, backend_options={"use_uvloop": True})
