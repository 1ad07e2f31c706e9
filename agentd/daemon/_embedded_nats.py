"""The embedded nats-server ([bus].url unset): a supervised child with a generated config.

With [identity] on, the daemon's identity owns the server's users (it rewrites the config and
reloads the server as identities come and go); otherwise the config has only the listener, the
JetStream store and TLS when configured.
"""

from __future__ import annotations

from agentd.bus import nats_server_argv, nats_server_config, wait_until_listening
from agentd.config import Config
from agentd.daemon._child_events import NATS_CHILD
from agentd.daemon._identity import DaemonIdentity
from agentd.errors import BusUnavailable, WorkerCrashed
from agentd.identity import nats_tls_block
from agentd.supervisor import ChildInfo, ChildSpec, RestartPolicy, Supervisor

__all__ = ["start_embedded_nats"]


async def start_embedded_nats(
    config: Config, supervisor: Supervisor, identity: DaemonIdentity | None, url: str
) -> None:
    """Write the server's config and start it under `supervisor`; returns once it listens."""
    cfg = config.bus.embedded
    state_dir = config.daemon.state_dir
    store = cfg.store_dir or state_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    conf = state_dir / "nats-server.conf"
    tls = nats_tls_block(config.bus.tls)
    if identity is not None:

        def server_pid() -> int | None:
            try:
                return supervisor.info(NATS_CHILD).pid
            except KeyError:
                return None

        identity.attach_server(
            conf, lambda auth: nats_server_config(cfg, store, tls + auth), server_pid, url
        )
    else:
        conf.write_text(nats_server_config(cfg, store, tls))

    async def listening(info: ChildInfo) -> None:
        await wait_until_listening(cfg.host, cfg.port, timeout_s=cfg.ready_timeout_s)

    log_path = state_dir / "logs" / "nats-server.log"
    spec = ChildSpec(
        name=NATS_CHILD,
        argv=nats_server_argv(cfg, conf),
        restart=RestartPolicy(max_restarts=20, window_s=60.0, backoff_initial_s=0.05),
        stop_grace_s=5.0,
        ready=listening,
        ready_timeout_s=cfg.ready_timeout_s,
        log_path=log_path,
    )
    try:
        await supervisor.start(spec)
    except WorkerCrashed as exc:
        raise BusUnavailable(
            f"the embedded nats-server did not start on {cfg.host}:{cfg.port}: {exc}. "
            f"Is the port in use? Set [bus.embedded].port or [bus].url. Its log: {log_path}"
        ) from exc
