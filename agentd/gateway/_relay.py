"""Sending one call to a replica of its pool and its answer back to the caller.

A replica that fails before the caller has received a byte (refused connection, reset, a 503
from a dead engine, a body cut short) is reported to the pool manager and the call is tried on
another replica; the caller never sees a half answer from the first one. Once bytes have gone
to the caller (a stream), a failure ends the stream with an error event instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from agentd.gateway._protocol import CallRequest, error_body, read_usage
from agentd.gateway._routing import ReplicaChooser
from agentd.gateway._sse import UsageStripper
from agentd.gateway._upstreams import ReplicaEndpoint, Upstreams
from agentd.telemetry import inject_http_headers

__all__ = ["CallOutcome", "Relay"]

_JSON = {"Content-Type": "application/json"}
_TAIL_BYTES = 8192
# Statuses that mean "this replica cannot serve now", not "this request is wrong".
_RETRY_STATUSES = frozenset({502, 503, 504})
_UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


@dataclass
class CallOutcome:
    """What happened to one relayed call, for its decision record."""

    decision: str = "ok"
    reason: str | None = None
    status: int = 200
    endpoint: ReplicaEndpoint | None = None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    ttft_s: float | None = None
    output_digest: str | None = None
    output_bytes: int = 0


class Relay:
    """Forwards calls over one pooled aiohttp client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        upstreams: Upstreams,
        chooser: ReplicaChooser,
        *,
        max_attempts: int,
    ) -> None:
        self.session = session
        self.upstreams = upstreams
        self.chooser = chooser
        self.max_attempts = max_attempts

    async def relay(
        self,
        request: web.Request,
        call: CallRequest,
        pool: str,
        key: bytes,
        started: float,
    ) -> tuple[web.StreamResponse, CallOutcome]:
        outcome = CallOutcome()
        tried: set[str] = set()
        while outcome.attempts < self.max_attempts:
            candidates = [e for e in self.upstreams.endpoints(pool) if e.replica not in tried]
            if not candidates:
                break
            endpoint = self.chooser.choose(candidates, key)
            tried.add(endpoint.replica)
            outcome.attempts += 1
            outcome.endpoint = endpoint
            self.chooser.started(endpoint.replica)
            try:
                response = await self._attempt(request, call, endpoint, outcome, started)
            except _UpstreamFailed as failed:
                outcome.failures.append(f"{endpoint.replica}: {failed}")
                self.upstreams.report_failure(endpoint.replica, str(failed))
                continue
            finally:
                self.chooser.finished(endpoint.replica)
            return response, outcome
        outcome.decision = "unavailable"
        outcome.status = 503
        if outcome.failures:
            outcome.reason = f"no replica of pool {pool} answered: " + "; ".join(outcome.failures)
        else:
            outcome.reason = f"pool {pool} has no ready replica"
        body = error_body(
            outcome.reason + "; retry later", "service_unavailable", code="no_replica"
        )
        return web.Response(body=body, status=503, headers=_JSON), outcome

    async def _attempt(
        self,
        request: web.Request,
        call: CallRequest,
        endpoint: ReplicaEndpoint,
        outcome: CallOutcome,
        started: float,
    ) -> web.StreamResponse:
        url = f"{endpoint.base_url}/v1/{call.kind}"
        try:
            # the vLLM call is a child of this call's `chat` span
            headers = inject_http_headers(dict(_JSON))
            async with self.session.post(
                url, data=call.for_model(endpoint.served_name), headers=headers
            ) as upstream:
                if upstream.status in _RETRY_STATUSES:
                    text = (await upstream.read())[:200].decode("utf-8", "replace")
                    raise _UpstreamFailed(f"HTTP {upstream.status}: {text}")
                if call.stream and upstream.status == 200:
                    return await self._stream(request, call, upstream, outcome, started)
                data = await upstream.read()
        except _UPSTREAM_ERRORS as exc:
            raise _UpstreamFailed(_describe(exc)) from exc
        outcome.status = upstream.status
        outcome.output_digest = hashlib.sha256(data).hexdigest()
        outcome.output_bytes = len(data)
        if upstream.status == 200:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            outcome.tokens_in, outcome.tokens_out, outcome.finish_reason = read_usage(parsed)
            _read_identity(parsed, outcome)
        else:
            outcome.decision = "upstream_error"
            outcome.reason = f"the model server answered HTTP {upstream.status}: " + data[
                :300
            ].decode("utf-8", "replace")
        return web.Response(
            body=data,
            status=upstream.status,
            headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")},
        )

    async def _stream(
        self,
        request: web.Request,
        call: CallRequest,
        upstream: aiohttp.ClientResponse,
        outcome: CallOutcome,
        started: float,
    ) -> web.StreamResponse:
        # Wait for the first bytes before answering: until then the call can move elsewhere.
        first = await upstream.content.readany()
        if not first:
            raise _UpstreamFailed("the stream ended before its first byte")
        outcome.ttft_s = time.perf_counter() - started
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        # the digest and size are of what the caller received; usage is read from upstream's
        stripper = UsageStripper() if call.strip_usage else None
        digest = hashlib.sha256()
        size = 0
        tail = first
        try:
            out = stripper.feed(first) if stripper else first
            digest.update(out)
            size += len(out)
            await response.write(out)
            async for chunk in upstream.content.iter_any():
                tail = (tail + chunk)[-_TAIL_BYTES:]
                if stripper is not None:
                    chunk = stripper.feed(chunk)
                    if not chunk:
                        continue
                digest.update(chunk)
                size += len(chunk)
                await response.write(chunk)
            if stripper is not None and (rest := stripper.flush()):
                digest.update(rest)
                size += len(rest)
                await response.write(rest)
        except _UPSTREAM_ERRORS as exc:
            if request.transport is None or request.transport.is_closing():
                outcome.decision, outcome.reason = "cancelled", "the caller went away"
            else:
                outcome.decision = "error"
                outcome.reason = f"the model replica failed mid-stream: {_describe(exc)}"
                event = error_body(outcome.reason, "server_error", code="upstream_failed")
                with contextlib.suppress(*_UPSTREAM_ERRORS):
                    await response.write(b"data: " + event + b"\n\n")
        outcome.output_digest = digest.hexdigest()
        outcome.output_bytes = size
        _read_stream_tail(tail, outcome)
        with contextlib.suppress(*_UPSTREAM_ERRORS):
            await response.write_eof()
        return response


class _UpstreamFailed(Exception):
    """This replica failed before the caller received anything: try another."""


def _read_stream_tail(tail: bytes, outcome: CallOutcome) -> None:
    # The usage chunk and the finish reason come last; only the tail is parsed.
    for line in tail.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        try:
            chunk = json.loads(line[6:])
        except ValueError:
            continue  # the tail's first line may be cut
        tokens_in, tokens_out, finish = read_usage(chunk)
        _read_identity(chunk, outcome)
        if tokens_out is not None:
            outcome.tokens_in, outcome.tokens_out = tokens_in, tokens_out
        if finish is not None:
            outcome.finish_reason = finish


def _read_identity(response: Any, outcome: CallOutcome) -> None:
    # the completion's id and the model that answered, for the call's span
    if isinstance(response, dict):
        if isinstance(ident := response.get("id"), str):
            outcome.response_id = ident
        if isinstance(model := response.get("model"), str):
            outcome.response_model = model


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
