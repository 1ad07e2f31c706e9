"""A worker-like process that publishes numbered decision records through a TracePublisher.

    python -m tests.trace.publisher_process URL AGENT COUNT ID_PREFIX [RECORDS_PER_S]

Prints "started" once connected, then one JSON line of the publisher's counters when every
record is acked (exit 0) or the flush timed out (exit 1).
"""

from __future__ import annotations

import json
import sys
import time

import anyio
import nats

from agentd.bus import Subjects
from agentd.trace import DecisionRecord, Lineage, TracePublisher


async def publish(url: str, agent: str, count: int, id_prefix: str, rate: float) -> int:
    nc = await nats.connect(url, max_reconnect_attempts=-1)
    lineage = Lineage(agent_version="0123456789abcdef", spec_hash="sha256:" + "ab" * 32)
    publisher = TracePublisher(nc, Subjects(), agent, replica=f"{agent}-1", lineage=lineage)
    print("started", flush=True)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            started = time.monotonic()
            for i in range(count):
                if rate and i % 50 == 0:  # paced, so that the publishing outlasts a kill
                    await anyio.sleep(max(0.0, started + i / rate - time.monotonic()))
                record = DecisionRecord(
                    id=f"{id_prefix}-{i:06d}",
                    kind="x.test.kill",
                    agent=agent,
                    replica=f"{agent}-1",
                    run_id=f"{id_prefix}-run-{i // 10}",
                    inputs={"tool": "search", "query": f"applicant {i} " * 8},
                    outputs={"hits": [i, i + 1, i + 2]},
                    decision="allow",
                    lineage=lineage,
                )
                await publisher.put(record)
            flushed = await publisher.close(timeout_s=120)
    finally:
        await nc.close()
    counters = {
        "published": publisher.published,
        "duplicates": publisher.duplicates,
        "retries": publisher.retries,
        "dropped": publisher.dropped,
    }
    print(json.dumps(counters), flush=True)
    return 0 if flushed else 1


def main() -> int:
    url, agent, count, id_prefix = sys.argv[1:5]
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    code: int = anyio.run(publish, url, agent, int(count), id_prefix, rate)
    return code


if __name__ == "__main__":
    sys.exit(main())
