"""Example tool: `http.fetch`, which does NOT reach the network unless told to.

It answers canned bodies for the two hosts the example policy allows
(api.creditbureau.example, rates.example.org) and fails for any other, so the examples and
tests run offline and nothing can leave the machine. `$AGENTD_HTTP_FETCH_LIVE` may list
`host:port` pairs (comma-separated, e.g. a local fixture `127.0.0.1:8123`) that it fetches for
real, body cut at 64 KiB. It runs isolated (in a child process, killed on timeout), as a real
fetcher should: a hung connection cannot pin a daemon thread. Its results are untrusted: what
comes from outside taints the run that receives it (agentd/tools/README.md, "Taint").
"""

from __future__ import annotations

import os
import urllib.request
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field

from agentd.tools import call_deadline, tool

_CANNED: dict[str, dict[str, Any]] = {
    "api.creditbureau.example": {"bureau": "example", "open_accounts": 3, "defaults": 0},
    "rates.example.org": {"base_rate_percent": 4.25, "as_of": "2026-11-01"},
}
MAX_BODY_BYTES = 64 * 1024


def _live() -> set[str]:
    return {p.strip().lower() for p in os.environ.get("AGENTD_HTTP_FETCH_LIVE", "").split(",")}


def _live_ports() -> list[int]:
    """The ports of the live hosts: the only ones its sandbox lets it connect to."""
    return sorted({int(p.rsplit(":", 1)[1]) for p in _live() if p.rsplit(":", 1)[-1].isdigit()})


@tool("http.fetch", isolated=True, timeout_s=10, trust="untrusted", connect_ports=_live_ports())
def http_fetch(
    url: Annotated[str, Field(description="an https URL on an allowed host", max_length=2048)],
) -> dict[str, Any]:
    """GET `url` (canned, except for the hosts $AGENTD_HTTP_FETCH_LIVE lists)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if f"{host}:{parts.port}" in _live():
        timeout = min(max(call_deadline().remaining_s(), 0.1), 10.0)
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (listed)
            body = response.read(MAX_BODY_BYTES).decode("utf-8", "replace")
            return {"url": url, "status": response.status, "body": body}
    if host not in _CANNED:
        raise ValueError(f"{host or url!r} is not reachable from this example")
    return {"url": url, "status": 200, "body": _CANNED[host]}
