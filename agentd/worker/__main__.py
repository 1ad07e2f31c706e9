"""`python -m agentd.worker --agent NAME`: one replica, as spawned by the daemon."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import anyio

from agentd.config import load_agent
from agentd.errors import AgentdError
from agentd.sandbox import set_undumpable
from agentd.telemetry import TelemetrySettings, setup_telemetry
from agentd.worker._llm_tracing import trace_llm_clients
from agentd.worker._settings import WorkerSettings, take_secrets
from agentd.worker._worker import AgentWorker


async def _serve(worker: AgentWorker) -> None:
    async with anyio.create_task_group() as tg:

        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    await worker.shutdown()

        tg.start_soon(on_signals)
        await worker.run()
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentd.worker")
    parser.add_argument("--agent", required=True, help="the agent this replica runs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        set_undumpable()  # before the secrets arrive: other processes of this uid cannot read them
        take_secrets()
        settings = WorkerSettings.from_env(args.agent)
        agent = load_agent(settings.agent_dir)
        telemetry = setup_telemetry(
            TelemetrySettings.from_env(),
            service_name="agentd-worker",
            attributes={
                "service.instance.id": settings.replica,
                "gen_ai.agent.name": settings.agent,
                "agentd.agent.version": agent.version,
            },
        )
        trace_llm_clients()  # before the graph module imports its OpenAI client
        worker = AgentWorker(settings, agent)
        try:
            anyio.run(_serve, worker, backend_options={"use_uvloop": True})
        finally:
            telemetry.shutdown()  # export what is buffered
    except AgentdError as exc:
        print(f"agentd.worker: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # raised inside the task group
        matched, _ = group.split(AgentdError)
        if matched is None:
            raise
        for error in _leaves(matched):
            print(f"agentd.worker: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _leaves(group: BaseExceptionGroup[AgentdError]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


if __name__ == "__main__":
    sys.exit(main())
