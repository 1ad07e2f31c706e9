"""What agentd asks a running vLLM server over HTTP: is it up, does it answer, how loaded is it."""

from __future__ import annotations

import anyio
import httpx

from agentd.inference._load import ReplicaLoad, parse_vllm_metrics

__all__ = ["check_serving", "read_load", "wait_serving"]

# Between polls while weights load; vLLM offers no event to await.
_POLL_S = 0.5


async def check_serving(
    client: httpx.AsyncClient, base_url: str, served_name: str, *, timeout_s: float
) -> str | None:
    """None if /health answers 200 and a one-token completion comes back within `timeout_s`,
    else what went wrong. A hung engine still answers /health, so the completion is needed."""
    try:
        with anyio.fail_after(timeout_s):
            health = await client.get(f"{base_url}/health", timeout=timeout_s)
            if health.status_code != 200:
                return f"/health answered {health.status_code}"
            completion = await client.post(
                f"{base_url}/v1/completions",
                json={"model": served_name, "prompt": "ok", "max_tokens": 1, "temperature": 0},
                timeout=timeout_s,
            )
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if completion.status_code != 200:
        return f"/v1/completions answered {completion.status_code}: {completion.text[:200]}"
    try:
        choices = completion.json()["choices"]
    except (ValueError, KeyError, TypeError):
        return "/v1/completions answered 200 without choices"
    return None if choices else "/v1/completions answered 200 without choices"


async def wait_serving(
    client: httpx.AsyncClient, base_url: str, served_name: str, *, attempt_timeout_s: float
) -> None:
    """Return once the server serves (see `check_serving`); the caller bounds the wait.

    Before the engine is up the port refuses connections: poll, since nothing announces it.
    """
    while True:
        problem = await check_serving(client, base_url, served_name, timeout_s=attempt_timeout_s)
        if problem is None:
            return
        await anyio.sleep(_POLL_S)


async def read_load(client: httpx.AsyncClient, base_url: str, *, timeout_s: float) -> ReplicaLoad:
    """The server's running and waiting requests and KV cache use, from /metrics.

    Raises httpx.HTTPError or ValueError when it cannot be read.
    """
    response = await client.get(f"{base_url}/metrics", timeout=timeout_s)
    response.raise_for_status()
    return parse_vllm_metrics(response.text)
