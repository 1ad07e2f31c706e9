"""The LLM gateway: an OpenAI-compatible HTTP server in front of every model pool.

Each call: bearer token -> holder and its policy subject (401; a replica's is its agent's
name, an external agent's or an outside token's `ext:<name>`), body checked and what it may
generate bounded (400), model name -> pool (404), an outside token's pool scope (403), policy
(subject, model:<pool>, infer) (403 with the rule), the limits.toml model limit of (subject,
pool) reserved for that bound (429 with Retry-After; 400 for a call larger than the whole bucket,
which no wait would let through; 503 when the budgets' store cannot answer), relayed to a replica
chosen for prefix affinity under a load bound, the reservation settled with the real usage; one
inference span and one `llm.call` decision record, whatever the outcome.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from agentd.config import GatewayConfig
from agentd.errors import ConfigError
from agentd.gateway._budget_refusals import reserve
from agentd.gateway._budgets import TokenBudgets
from agentd.gateway._caller_run import caller_run
from agentd.gateway._catalog import model_entry, visible_pools
from agentd.gateway._http_errors import openai_errors
from agentd.gateway._policy import PolicyAnswer, PolicyCheck
from agentd.gateway._protocol import CallKind, MalformedRequest, error_body, parse_call
from agentd.gateway._records import (
    Refusal,
    call_record,
    describe_outcome,
    refusal_response,
    unauthenticated,
)
from agentd.gateway._relay import CallOutcome, Relay
from agentd.gateway._routing import AffinityRouter, ReplicaChooser
from agentd.gateway._tokens import TokenBook, TokenHolder
from agentd.gateway._upstreams import Upstreams
from agentd.telemetry import (
    ChatSpan,
    InferenceOperation,
    chat_span,
    current_span_ids,
    extract_context,
)

__all__ = ["LLMGateway", "PolicyAnswer", "PolicyCheck"]

log = logging.getLogger("agentd.gateway")

_JSON = {"Content-Type": "application/json"}
_OPERATIONS: dict[CallKind, InferenceOperation] = {
    "chat/completions": "chat",
    "completions": "text_completion",
}


class LLMGateway:
    """Serves /v1/chat/completions, /v1/completions and /v1/models on [gateway].host:port.

    `run()` is a service (ready once listening; `url` then names the bound address);
    `shutdown()` is repeatable. `upstreams` may be replaced while running (the pool manager).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        upstreams: Upstreams,
        tokens: TokenBook,
        record: Callable[..., None],
        policy: PolicyCheck | None = None,
        chooser: ReplicaChooser | None = None,
        budgets: TokenBudgets | None = None,
    ) -> None:
        self.config = config
        self.upstreams = upstreams
        self.tokens = tokens
        self.policy = policy
        # limits.toml's model limits, their buckets in the daemon's KV store; None: no limits
        self.budgets = budgets
        self.chooser = chooser or AffinityRouter(config.load_factor)
        self._record = record
        self._relay: Relay | None = None
        self._stopped = anyio.Event()
        self.url: str | None = None

    # service lifecycle
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        failed: ConfigError | None = None
        async with anyio.create_task_group() as tg:
            if self.budgets is not None:  # their writers
                await tg.start(self.budgets.run)
            try:
                await self._serve(task_status)
            except ConfigError as exc:  # raised as itself, not in a group
                failed = exc
            finally:
                if self.budgets is not None:  # the settlements of the last calls
                    with anyio.CancelScope(shield=True):
                        await self.budgets.flush()
                tg.cancel_scope.cancel()
        if failed is not None:
            raise failed

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        cfg = self.config
        app = web.Application(client_max_size=cfg.max_request_bytes, middlewares=[openai_errors])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_get("/health", self._health)
        timeout = aiohttp.ClientTimeout(
            total=cfg.request_timeout_s, sock_connect=cfg.connect_timeout_s
        )
        # one pooled connector for every replica: keep-alive connections, no per-call setup
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            self._relay = Relay(
                session, self.upstreams, self.chooser, max_attempts=cfg.max_attempts
            )
            await runner.setup()
            try:
                tls = _server_tls(cfg)
                site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True, ssl_context=tls)
                try:
                    await site.start()
                except OSError as exc:
                    raise ConfigError(
                        "[gateway]",
                        [
                            f"host/port: cannot listen on {cfg.host}:{cfg.port}: {exc}; "
                            "is the port in use? set [gateway].port (0 picks a free one)"
                        ],
                    ) from exc
                port = _bound_port(runner) or cfg.port
                # workers on this host dial loopback when the gateway listens on every address
                host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.host, cfg.host)
                host = f"[{host}]" if ":" in host else host
                self.url = f"{'https' if tls else 'http'}://{host}:{port}/v1"
                log.info("LLM gateway listening on %s", self.url)
                task_status.started()
                await self._stopped.wait()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await runner.cleanup()

    async def shutdown(self) -> None:
        """Stop listening; calls in flight finish within aiohttp's shutdown grace."""
        self._stopped.set()

    def set_upstreams(self, upstreams: Upstreams) -> None:
        """Route to another source of replicas from now on (the daemon's pool manager)."""
        self.upstreams = upstreams
        if self._relay is not None:
            self._relay.upstreams = upstreams

    # credentials of agent replicas
    def worker_env(self, agent: str, replica: str) -> dict[str, str]:
        """Issue `replica` a token and return the environment that points its OpenAI clients
        (ChatOpenAI, openai) at this gateway. Call once the gateway is running."""
        if self.url is None:
            raise RuntimeError("the LLM gateway is not running yet: it has no URL")
        token = self.tokens.issue(agent, replica)
        env = {
            "AGENTD_LLM_URL": self.url,
            "AGENTD_LLM_TOKEN": token,
            "OPENAI_BASE_URL": self.url,
            "OPENAI_API_KEY": token,
        }
        if self.config.tls.ca_file is not None:  # the CA a client verifies the gateway with
            env["AGENTD_LLM_CA_FILE"] = str(self.config.tls.ca_file)
        return env

    def revoke(self, replica: str) -> bool:
        """Revoke `replica`'s token (it exited); False when it held none."""
        return self.tokens.revoke(replica)

    # handlers
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', headers=_JSON)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "chat/completions")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "completions")

    async def _models(self, request: web.Request) -> web.Response:
        try:
            holder = self._holder(request)
        except Refusal as refused:
            return refusal_response(refused)
        data = [
            model_entry(self.upstreams, pool)
            for pool in visible_pools(self.upstreams, self.policy, holder.subject, holder.pools)
        ]
        body = json.dumps({"object": "list", "data": data}).encode()
        return web.Response(body=body, headers=_JSON)

    async def _model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{model}: a pool by its name or served name; 404 for one this agent
        may not see (as the list hides it)."""
        try:
            holder = self._holder(request)
            name = request.match_info["model"]
            pool = self._pool_of(name)
            if pool not in visible_pools(self.upstreams, self.policy, holder.subject, holder.pools):
                raise Refusal(
                    404,
                    "invalid_request_error",
                    f"the model {name!r} does not exist or {holder.subject} may not use it",
                    code="model_not_found",
                    param="model",
                )
        except Refusal as refused:
            return refusal_response(refused)
        return web.Response(
            body=json.dumps(model_entry(self.upstreams, pool)).encode(), headers=_JSON
        )

    async def _call(self, request: web.Request, kind: CallKind) -> web.StreamResponse:
        started = time.perf_counter()
        # one span per call, refused or not: `chat {model}` / `text_completion {model}`, a
        # child of the agent's run (its traceparent header), parent of vLLM's
        with chat_span(
            None, operation=_OPERATIONS[kind], parent=extract_context(request.headers)
        ) as span:
            return await self._traced_call(request, kind, started, span)

    async def _traced_call(
        self, request: web.Request, kind: CallKind, started: float, span: ChatSpan
    ) -> web.StreamResponse:
        holder: TokenHolder | None = None
        fields: dict[str, Any] = {"endpoint": kind}
        raw = b""
        # the caller's run (its OpenAI client's baggage): joined only to a token holder's call
        joined = caller_run(request.headers)
        try:
            holder = self._holder(request)
            span.set_agent(holder.agent)
            raw = await self._read(request)
            try:
                call = parse_call(
                    raw,
                    kind,
                    default_max_tokens=self.config.default_max_tokens,
                    max_sequences=self.config.max_sequences_per_call,
                )
            except MalformedRequest as exc:
                raise Refusal(
                    400, "invalid_request_error", str(exc), code="bad_request", param=exc.param
                ) from None
            fields.update(
                model=call.model,
                stream=call.stream,
                max_tokens=call.max_tokens,
                sequences=call.sequences,
                reserved=call.token_estimate,
            )
            span.set_request(call.model, call.body, max_tokens=call.max_tokens)
            pool = self._pool_of(call.model)
            fields["pool"] = pool
            span.set_pool(pool)
            answer = self._authorize(holder, pool)
            reservation = await reserve(self.budgets, holder.subject, pool, call.token_estimate)
        except Refusal as refused:
            span.set_error(refused.code, str(refused), status=refused.status)
            record = call_record(holder, raw, started, fields, refusal=refused)
            self._emit({**record, **current_span_ids(), **(joined if holder else {})})
            return refusal_response(refused)
        relay = self._relay
        assert relay is not None, "the gateway is not running"
        key = holder.subject.encode() + b"\0" + call.prefix
        outcome = CallOutcome(decision="error", status=500)
        try:
            response, outcome = await relay.relay(request, call, pool, key, started)
        except Exception as exc:  # a bug here must not take the gateway down: 500, recorded
            log.exception("an LLM call of %s failed inside the gateway", holder.agent)
            outcome.reason = f"internal: {exc!r}"
            body = error_body(f"the LLM gateway failed: {exc!r}", "server_error", code="internal")
            response = web.Response(body=body, status=500, headers=_JSON)
        finally:
            used = None
            if outcome.tokens_out is not None:
                used = (outcome.tokens_in or len(raw) // 4) + outcome.tokens_out
            elif outcome.endpoint is not None and outcome.decision in ("ok", "error", "cancelled"):
                used = reservation.tokens  # a model generated, usage unknown: charge it all
            reservation.settle(used)
            describe_outcome(span, outcome)
            record = call_record(holder, raw, started, fields, outcome=outcome, rule=answer)
            self._emit({**record, **current_span_ids(), **joined})
        return response

    def _emit(self, fields: dict[str, Any]) -> None:
        try:
            self._record("llm.call", **fields)
        except Exception:
            log.exception("recording an LLM call failed")

    # the steps before a call goes upstream
    def _holder(self, request: web.Request) -> TokenHolder:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        bearer = scheme.lower() == "bearer"
        holder = self.tokens.holder(token) if bearer else None
        if holder is None:
            raise unauthenticated(self.tokens.outside_entry(token) if bearer else None)
        return holder

    async def _read(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refusal(
                413,
                "invalid_request_error",
                f"the request body is larger than {self.config.max_request_bytes} bytes "
                "([gateway].max_request_bytes)",
                code="request_too_large",
            ) from None

    def _pool_of(self, model: str) -> str:
        pool = self.upstreams.pool_of(model)
        if pool is not None:
            return pool
        raise Refusal(
            404,
            "invalid_request_error",
            f"the model {model!r} does not exist; models: {sorted(self.upstreams.pool_names())}",
            code="model_not_found",
            param="model",
        )

    def _authorize(self, holder: TokenHolder, pool: str) -> PolicyAnswer | None:
        if holder.pools is not None and pool not in holder.pools:  # an outside token's scope
            raise Refusal(
                403,
                "permission_error",
                f"the token {holder.agent!r} is scoped to the pools {list(holder.pools)}, "
                f"not {pool}",
                code="token_scope",
                rule="token scope",
            )
        if self.policy is None:
            return None
        answer = self.policy(holder.subject, f"model:{pool}", "infer")
        if not answer.allowed:
            raise Refusal(
                403,
                "permission_error",
                f"{holder.subject} may not use model pool {pool}: "
                f"{answer.reason or 'denied by policy'} (rule {answer.rule})",
                code="policy_denied",
                rule=answer.rule,
            )
        return answer


def _server_tls(cfg: GatewayConfig) -> ssl.SSLContext | None:
    """HTTPS for [gateway.tls] (TLS 1.2 at least); None: plain HTTP, fine on loopback."""
    if not cfg.tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "[gateway.tls]", [f"cert_file/key_file: cannot load {cfg.tls.cert_file}: {exc}"]
        ) from exc
    return context


def _bound_port(runner: web.AppRunner) -> int | None:
    # port 0 in the config: the OS picked one, which only the listening socket knows
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
