"""Example tool: `http.fetch`, which does NOT reach the network.

It answers canned bodies for the two hosts the example policy allows
(api.creditbureau.example, rates.example.org) and fails for any other, so the examples and
tests run offline and nothing can leave the machine. It runs isolated (in a child process,
killed on timeout), as a real fetcher should: a hung connection cannot pin a daemon thread.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field

from agentd.tools import tool

_CANNED: dict[str, dict[str, Any]] = {
    "api.creditbureau.example": {"bureau": "example", "open_accounts": 3, "defaults": 0},
    "rates.example.org": {"base_rate_percent": 4.25, "as_of": "2026-11-01"},
}


@tool("http.fetch", isolated=True, timeout_s=10)
def http_fetch(
    url: Annotated[str, Field(description="an https URL on an allowed host", max_length=2048)],
) -> dict[str, Any]:
    """GET `url` (canned: this example never touches the network)."""
    host = (urlsplit(url).hostname or "").lower()
    if host not in _CANNED:
        raise ValueError(f"{host or url!r} is not reachable from this example")
    return {"url": url, "status": 200, "body": _CANNED[host]}
