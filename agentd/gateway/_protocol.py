"""The OpenAI wire format, as little of it as the gateway needs.

`parse_call` reads a request body once: the model it names, whether it streams, how many tokens
it may generate, and the affinity key (agent + the prompt's repeating prefix). The body goes
upstream as the same bytes unless the gateway must change it (the served model name, a default
max_tokens, usage in the stream). Errors are OpenAI-shaped JSON so OpenAI clients show them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from agentd.bus import BoundedJSONError, loads_bounded

__all__ = [
    "CallKind",
    "CallRequest",
    "MalformedRequest",
    "error_body",
    "parse_call",
    "read_usage",
]

CallKind = Literal["chat/completions", "completions"]
# How much of a completions prompt counts as its prefix for affinity.
_PREFIX_CHARS = 2048


class MalformedRequest(ValueError):
    """The request cannot be served as it is; the message says what to fix (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class CallRequest:
    """One parsed call. `body` holds what to send once `model` is rewritten (`for_model`)."""

    kind: CallKind
    model: str
    stream: bool
    max_tokens: int
    choices: int
    prefix: bytes
    body: dict[str, Any]
    raw: bytes
    changed: bool

    def for_model(self, served_name: str) -> bytes:
        """The body to send to a replica that serves the model as `served_name`."""
        if not self.changed and served_name == self.model:
            return self.raw
        return json.dumps({**self.body, "model": served_name}).encode()

    @property
    def token_estimate(self) -> int:
        """Tokens to reserve: a rough prompt size (4 bytes a token) plus what it may generate."""
        return len(self.raw) // 4 + self.max_tokens * self.choices


def parse_call(raw: bytes, kind: CallKind, *, default_max_tokens: int) -> CallRequest:
    """Parse and check a chat or completions body; raise MalformedRequest saying what is wrong."""
    try:  # the size is bounded before ([gateway].max_request_bytes); the depth here
        body = loads_bounded(raw, what="the request body", max_bytes=max(len(raw), 1))
    except BoundedJSONError as exc:
        raise MalformedRequest(str(exc)) from None
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MalformedRequest("'model' is required and must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise MalformedRequest("'stream' must be true or false", "stream")
    choices = _positive_int(body, "n", 1)
    changed = False
    limit_key = "max_tokens"
    if kind == "chat/completions" and body.get("max_completion_tokens") is not None:
        limit_key = "max_completion_tokens"
    if body.get(limit_key) is None:
        body[limit_key] = default_max_tokens
        changed = True
    max_tokens = _positive_int(body, limit_key, default_max_tokens)
    prefix = _chat_prefix(body) if kind == "chat/completions" else _completion_prefix(body)
    if stream:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise MalformedRequest("'stream_options' must be an object", "stream_options")
        # usage in the last chunk settles the budget with the real count
        if not (options or {}).get("include_usage"):
            body["stream_options"] = {**(options or {}), "include_usage": True}
            changed = True
    return CallRequest(kind, model, stream, max_tokens, choices, prefix, body, raw, changed)


def _positive_int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MalformedRequest(f"'{key}' must be a positive integer, got {value!r}", key)
    return value


def _chat_prefix(body: dict[str, Any]) -> bytes:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedRequest("'messages' must be a non-empty list", "messages")
    digest = hashlib.blake2b(digest_size=16)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise MalformedRequest(
                f"messages[{index}] must be an object with a 'role'", f"messages[{index}]"
            )
        if message["role"] not in ("system", "developer"):
            break
        digest.update(json.dumps(message.get("content")).encode())
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise MalformedRequest("'tools' must be a list", "tools")
        digest.update(json.dumps(tools).encode())
    return digest.digest()


def _completion_prefix(body: dict[str, Any]) -> bytes:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt:
        prompt = prompt[0]
    if isinstance(prompt, list):  # token ids
        text = json.dumps(prompt[:512])
    elif isinstance(prompt, str):
        text = prompt
    else:
        raise MalformedRequest("'prompt' must be a string or a list", "prompt")
    return hashlib.blake2b(text[:_PREFIX_CHARS].encode(), digest_size=16).digest()


def read_usage(response: Any) -> tuple[int | None, int | None, str | None]:
    """(prompt tokens, completion tokens, first finish reason) of a parsed response or chunk."""
    prompt = completion = None
    finish = None
    if isinstance(response, dict):
        usage = response.get("usage")
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens")
            completion = usage.get("completion_tokens")
        for choice in response.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                finish = str(choice["finish_reason"])
                break
    return prompt, completion, finish


def error_body(
    message: str, kind: str, *, code: str | None = None, param: str | None = None
) -> bytes:
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}}."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()
