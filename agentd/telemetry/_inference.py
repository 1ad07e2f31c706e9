"""The inference span of one model call, after the OpenTelemetry GenAI semantic conventions.

`{gen_ai.operation.name} {gen_ai.request.model}`, CLIENT: `chat` for /v1/chat/completions,
`text_completion` for /v1/completions. The LLM gateway starts it before it knows who calls or
which model (a refused call gets a span too, with `error.type`), then fills in what it learns:
`set_request` the model and the request parameters sent (`REQUEST_PARAMETERS`, `n` as
`gen_ai.request.choice.count` when not 1, `response_format` as `gen_ai.output.type`),
`set_server` the replica, `set_response` what came back, `set_error` a failure. Nothing is
computed for a span that is not recording (export off).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from agentd.telemetry._spans import _current, _messages, content_text

__all__ = [
    "REQUEST_PARAMETERS",
    "ChatSpan",
    "InferenceOperation",
    "chat_span",
    "output_type",
    "request_attributes",
]

InferenceOperation = Literal["chat", "text_completion"]
ENGINE_PROVIDER = "vllm"

# OpenAI request field -> (attribute, type); `stop` is handled apart (a string or a list)
REQUEST_PARAMETERS: dict[str, tuple[str, type]] = {
    "temperature": ("gen_ai.request.temperature", float),
    "top_p": ("gen_ai.request.top_p", float),
    "top_k": ("gen_ai.request.top_k", float),  # vLLM's extension of the OpenAI API
    "frequency_penalty": ("gen_ai.request.frequency_penalty", float),
    "presence_penalty": ("gen_ai.request.presence_penalty", float),
    "seed": ("gen_ai.request.seed", int),
}
# response_format.type -> gen_ai.output.type (the modality requested, not the schema)
_OUTPUT_TYPES = {"json_schema": "json", "json_object": "json", "text": "text"}


def output_type(body: Mapping[str, Any]) -> str | None:
    """`gen_ai.output.type` of a request that names an output format, else None."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        return _OUTPUT_TYPES.get(str(fmt.get("type")))
    if any(body.get(key) is not None for key in ("guided_json", "structured_outputs")):
        return "json"  # vLLM's own ways to ask for JSON
    return None


def request_attributes(
    body: Mapping[str, Any], max_tokens: int | None
) -> dict[str, AttributeValue]:
    """The `gen_ai.request.*` / `gen_ai.output.type` attributes of a request body as sent
    (`max_tokens`: the bound the server was told, the gateway's default when the body had
    none). Values of the wrong type are left out rather than guessed at."""
    attributes: dict[str, AttributeValue] = {}
    for key, (name, kind) in REQUEST_PARAMETERS.items():
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if kind is int and not isinstance(value, int):
            continue
        attributes[name] = kind(value)
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = list(stop)
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    if (kind_out := output_type(body)) is not None:
        attributes["gen_ai.output.type"] = kind_out
    return attributes


@dataclass
class ChatSpan:
    """The span of one model call; fill it in as the call goes."""

    span: Span
    operation: InferenceOperation = "chat"

    def set_request(
        self,
        model: str,
        body: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        agent: str | None = None,
        pool: str | None = None,
    ) -> None:
        """The model asked for (the span is renamed `{operation} {model}`), who asks, the
        pool, and the request parameters of `body`."""
        span = self.span
        if not span.is_recording():
            return
        span.update_name(f"{self.operation} {model}")
        span.set_attribute("gen_ai.request.model", model)
        if agent is not None:
            span.set_attribute("gen_ai.agent.name", agent)
        if pool is not None:
            span.set_attribute("agentd.model.pool", pool)
        if body is not None:
            span.set_attributes(request_attributes(body, max_tokens))
        elif max_tokens is not None:
            span.set_attribute("gen_ai.request.max_tokens", max_tokens)

    def set_agent(self, agent: str) -> None:
        if self.span.is_recording():
            self.span.set_attribute("gen_ai.agent.name", agent)

    def set_pool(self, pool: str) -> None:
        if self.span.is_recording():
            self.span.set_attribute("agentd.model.pool", pool)

    def set_response(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Sequence[str] | None = None,
        output: Any = None,
    ) -> None:
        span = self.span
        if not span.is_recording():
            return
        values: dict[str, AttributeValue | None] = {
            "gen_ai.response.model": model,
            "gen_ai.response.id": response_id,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        if finish_reasons is not None:
            values["gen_ai.response.finish_reasons"] = list(finish_reasons)
        for key, value in values.items():
            if value is not None:
                span.set_attribute(key, value)
        if (messages := _messages("assistant", output)) is not None:
            span.set_attribute("gen_ai.output.messages", messages)

    def set_server(self, base_url: str) -> None:
        """The replica the call went to: `server.address` and `server.port` of its URL."""
        url = urlsplit(base_url)
        if url.hostname:
            self.span.set_attribute("server.address", url.hostname)
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
        if port is not None:
            self.span.set_attribute("server.port", port)

    def set_error(
        self, error_type: str, description: str | None = None, *, status: int | None = None
    ) -> None:
        """A call that failed or was refused: `error.type` (the OpenAI error code the caller
        got, e.g. "policy_denied", or an HTTP status), the HTTP status it was answered with."""
        self.span.set_attribute("error.type", error_type)
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        self.span.set_status(StatusCode.ERROR, description)


@contextmanager
def chat_span(
    model: str | None,
    *,
    operation: InferenceOperation = "chat",
    agent: str | None = None,
    pool: str | None = None,
    parent: Context | None = None,
    max_tokens: int | None = None,
    messages: Any = None,
) -> Iterator[ChatSpan]:
    """`{operation} {model}` around one model call, for the LLM gateway.

    `parent` is `extract_context(request.headers)` of the agent's HTTP request, so the call is
    a child of the run that made it; inside the block, `inject_http_headers` on the upstream
    request's headers makes the vLLM call a child of this span. Exceptions mark it failed.
    `model` may be None when the call is not parsed yet (the span is then named for the
    operation alone until `ChatSpan.set_request`). The replica is chosen inside the span:
    name it with `ChatSpan.set_server`.
    """
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": ENGINE_PROVIDER,
    }
    optional: dict[str, AttributeValue | None] = {
        "gen_ai.request.model": model,
        "gen_ai.agent.name": agent,
        "agentd.model.pool": pool,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.input.messages": content_text(messages) if messages is not None else None,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    name = f"{operation} {model}" if model else operation
    with _current(name, SpanKind.CLIENT, attributes, parent) as span:
        yield ChatSpan(span, operation)
