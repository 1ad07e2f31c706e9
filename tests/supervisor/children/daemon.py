"""A minimal daemon for the orphan test: supervises one child that has a grandchild, then idles.

Usage: daemon.py REGISTRY GRANDCHILD_PIDFILE [uvloop]. Prints "started <child pid>" once the child
is ready; the test then SIGKILLs this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from agentd.supervisor import ChildInfo, ChildSpec, Supervisor

CHILD = Path(__file__).with_name("child.py")


async def main(registry: Path, pidfile: Path) -> None:
    async def grandchild_started(info: ChildInfo) -> None:
        while not await anyio.Path(pidfile).exists():  # noqa: ASYNC110 (another process writes it)
            await anyio.sleep(0.01)

    async with Supervisor(registry_path=registry) as supervisor:
        info = await supervisor.start(
            ChildSpec(
                name="parent",
                argv=[sys.executable, str(CHILD), "--grandchild", str(pidfile)],
                ready=grandchild_started,
                ready_timeout_s=10,
            )
        )
        print(f"started {info.pid}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    use_uvloop = sys.argv[3:] == ["uvloop"]
    anyio.run(
        main,
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        backend="asyncio",
        backend_options={"use_uvloop": use_uvloop},
    )
