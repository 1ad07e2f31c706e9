"""Model pools with the real vLLM CPU build and the tiny model: one pool, started once for the
module (about 40 s per start here), carried through loading, a SIGKILL and a stopped engine.

Skipped when $AGENTD_VLLM_PYTHON (default /work/.venv-vllm/bin/python) is missing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentd.config import ModelPoolConfig
from agentd.inference import ModelPools
from tests.gateway.support import running_gateway
from tests.harness import descendants, pid_alive
from tests.inference.pool_helpers import Records, poll, running_pools
from tests.inference.tool_schemas import TOOLS, WeatherArgs
from tests.inference.vllm_server import vllm_python

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.anyio,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not vllm_python().exists(),
        reason=f"no vLLM environment at {vllm_python()} (set AGENTD_VLLM_PYTHON or run "
        "deploy/vllm-cpu/setup.sh)",
    ),
]

START_S = 240.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Pool:
    pools: ModelPools
    records: Records
    state_dir: Path
    pids_seen: set[int]

    def member(self) -> dict[str, Any]:
        row: dict[str, Any] = self.pools.snapshot()[0]["members"][0]
        return row

    def remember_processes(self) -> None:
        pid = self.member()["pid"]
        if pid:
            self.pids_seen |= {pid, *descendants(pid)}


@pytest.fixture(scope="module")
async def pool(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pool]:
    state_dir = tmp_path_factory.mktemp("pools-vllm")
    config = ModelPoolConfig.model_validate(
        {
            "model": str(tiny_model_dir),
            "launcher": {"python": str(vllm_python())},
            "device": "cpu",
            "replicas": {"min": 1, "max": 2},
            "kv_cache_bytes": 64 * 2**20,
            "max_num_seqs": 4,
            "startup_timeout_s": START_S,
            "stop_grace_s": 10.0,
            "liveness": {"interval_s": 2.0, "timeout_s": 5.0, "failures": 2},
            "autoscale": {"interval_s": 1.0, "cooldown_s": 5.0, "up_waiting": 2.0},
        }
    )
    # One replica per core; the second one exists only in the scale-up test.
    async with running_pools({"tiny": config}, state_dir, cores=[0, 1]) as (pools, records):
        handle = Pool(pools, records, state_dir, set())
        yield handle
        handle.remember_processes()
    survivors = [pid for pid in handle.pids_seen if pid_alive(pid)]
    assert survivors == [], "vLLM processes outlived the pool manager"


async def complete(pools: ModelPools) -> str:
    [endpoint] = pools.endpoints("tiny")
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.post(
            f"{endpoint.base_url}/v1/completions",
            json={"model": endpoint.served_name, "prompt": "def f(", "max_tokens": 4, "seed": 1},
        )
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["text"]
    return text


async def test_a_replica_loads_with_visible_progress_then_serves(pool: Pool) -> None:
    # The module's first test: the server was spawned moments ago and is loading.
    await poll(lambda: (pool.member()["loading"] or {}).get("last_line"), timeout_s=30)
    member = pool.member()
    assert member["state"] == "loading"
    assert member["placement"] == {"device": "cpu", "cores": "0", "kv_cache_bytes": 64 * 2**20}
    first_line = member["loading"]["last_line"]
    started = await pool.records.wait("model.started", replica="tiny-0", timeout_s=START_S)
    assert started["startup_s"] > 1.0
    assert pool.member()["state"] == "ready"
    log = (pool.state_dir / "logs" / "models" / "tiny-0.log").read_text()
    assert first_line in log
    assert isinstance(await complete(pool.pools), str)
    # the autoscaler reads /metrics every second
    await poll(lambda: pool.member()["load"] is not None, timeout_s=10)
    assert set(pool.member()["load"]) == {"running", "waiting", "kv_cache_pct"}
    pool.remember_processes()


async def test_the_pool_serves_langchain_through_the_gateway(pool: Pool) -> None:
    """The whole path of a graph's model call: ChatOpenAI -> the LLM gateway -> the pool's
    ready replica, with a strict tool call that parses."""
    from langchain_openai import ChatOpenAI

    await pool.records.wait("model.started", replica="tiny-0", timeout_s=START_S)
    async with running_gateway(pool.pools) as gw, httpx.AsyncClient() as http:
        token = gw.tokens.issue("underwriter", "underwriter-0")
        llm = ChatOpenAI(
            base_url=gw.url,
            api_key=token,
            model="tiny",
            temperature=0,
            max_completion_tokens=128,
            http_async_client=http,  # closed here, not left to the end of the session
        )
        bound = llm.bind_tools([TOOLS[0]], strict=True, tool_choice="get_weather")
        message = await bound.ainvoke("What is the weather in Paris this week?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    WeatherArgs.model_validate(call["args"])  # the schema held while decoding
    (record,) = gw.records.of("llm.call")
    assert (record["agent"], record["decision"]) == ("underwriter", "ok")
    assert record["attributes"]["pool"] == "tiny"
    assert record["attributes"]["model_replica"] == "tiny-0"


async def test_a_killed_replica_is_restarted_and_serves_again(pool: Pool) -> None:
    await pool.records.wait("model.started", replica="tiny-0", timeout_s=START_S)
    pid = pool.member()["pid"]
    pool.remember_processes()
    os.kill(pid, signal.SIGKILL)
    stopped = await pool.records.wait("model.stopped", replica="tiny-0", decision="exit")
    assert stopped["signal"] == signal.SIGKILL
    assert pool.pools.endpoints("tiny") == []
    await pool.records.wait("model.started", replica="tiny-0", count=2, timeout_s=START_S)
    assert pool.member()["pid"] != pid and pool.member()["restarts"] == 1
    assert isinstance(await complete(pool.pools), str)


def engine_core(api_pid: int) -> int:
    """The engine core process among the API server's descendants (vLLM names it so)."""
    for pid in descendants(api_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            comm = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            continue
        if b"EngineCore" in cmdline or "EngineCore" in comm:
            return pid
    raise AssertionError(f"no EngineCore among the descendants of {api_pid}")


async def test_a_stopped_engine_is_detected_and_replaced(pool: Pool) -> None:
    await pool.records.wait("model.started", replica="tiny-0", count=2, timeout_s=START_S)
    api_pid = pool.member()["pid"]
    core = engine_core(api_pid)
    pool.remember_processes()
    os.kill(core, signal.SIGSTOP)
    unhealthy = await pool.records.wait("model.health_changed", decision="unhealthy", timeout_s=30)
    assert "no answer within 5s" in unhealthy["reason"]
    assert pool.pools.endpoints("tiny") == []
    killed = await pool.records.wait("model.health_changed", decision="killed", timeout_s=30)
    assert "2 probes failed in a row, last: no answer within 5s" in killed["reason"]
    await pool.records.wait("model.started", replica="tiny-0", count=3, timeout_s=START_S)
    assert not pid_alive(core) and not pid_alive(api_pid)
    assert isinstance(await complete(pool.pools), str)


async def test_a_queue_scales_the_pool_up_to_a_second_replica(pool: Pool) -> None:
    await poll(lambda: pool.pools.endpoints("tiny"), timeout_s=START_S, every_s=0.5)
    [endpoint] = pool.pools.endpoints("tiny")
    body = {
        "model": endpoint.served_name,
        "prompt": "import os",
        "max_tokens": 512,
        "ignore_eos": True,  # every request runs its full length: the queue stays
    }

    async def ask(client: httpx.AsyncClient) -> None:
        # ask again as soon as an answer (or an error) comes: the queue stays until the
        # decision, however long the autoscaler takes to read it on a loaded machine
        while True:
            try:
                await client.post(f"{endpoint.base_url}/v1/completions", json=body)
            except httpx.HTTPError:
                await anyio.sleep(0.2)

    # max_num_seqs 4: of 48 requests, 44 wait, well over up_waiting 2 per replica.
    async with httpx.AsyncClient(timeout=120.0) as client, anyio.create_task_group() as tg:
        for _ in range(48):
            tg.start_soon(ask, client)
        up = await pool.records.wait("model.scaled", decision="1->2", timeout_s=120)
        tg.cancel_scope.cancel()  # the queue did its work; vLLM aborts what is left
    assert up["inputs"]["waiting_per_replica"] >= 2.0
    assert up["inputs"]["running_per_replica"] <= 4.0  # max_num_seqs
    await pool.records.wait("model.started", replica="tiny-1", timeout_s=START_S)
    members = pool.pools.snapshot()[0]["members"]
    assert [m["placement"]["cores"] for m in members] == ["0", "1"]
    assert [e.replica for e in pool.pools.endpoints("tiny")] == ["tiny-0", "tiny-1"]
    pool.remember_processes()
