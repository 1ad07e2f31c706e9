"""The OpenAI wire format, as little of it as the gateway needs.

`parse_call` reads a request body once: the model it names, whether it streams, an upper bound
of what it may generate, and the affinity key (agent + the prompt's repeating prefix). The body
goes upstream as the same bytes unless the gateway must change it (the served model name, a
default max_tokens, usage in the stream, which the relay then strips from what a caller that
did not ask for it receives). Errors are OpenAI-shaped JSON so OpenAI clients show
them.

The bound: a call generates at most `sequences * max_tokens` tokens, where `sequences` is the
number of prompts (a completions `prompt` may be a list of strings or of token-id lists, and
`prompt_embeds` a list) times the sequences generated per prompt (`n`, `best_of` where a server
honours it, the beam width `n` of `use_beam_search`). vLLM's `max_tokens` defaults to the rest of
the context when absent: the gateway writes its own default into the body instead, so the bound
holds for what the server is told. A parameter whose value could make the bound wrong (a prompt
list of mixed shapes, a non-integer `n`) is refused rather than guessed at.
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
    """Sequences generated per prompt: max(n, best_of)."""
    prompts: int
    prefix: bytes
    body: dict[str, Any]
    raw: bytes
    changed: bool
    strip_usage: bool = False
    """The gateway asked upstream for the stream's usage chunk; the caller did not: drop it."""

    def for_model(self, served_name: str) -> bytes:
        """The body to send to a replica that serves the model as `served_name`."""
        if not self.changed and served_name == self.model:
            return self.raw
        return json.dumps({**self.body, "model": served_name}).encode()

    @property
    def sequences(self) -> int:
        """How many sequences the call makes the model generate (prompts x choices)."""
        return self.prompts * self.choices

    @property
    def token_estimate(self) -> int:
        """Tokens to reserve: a rough prompt size (4 bytes a token) plus the most the call may
        generate (every sequence running to max_tokens)."""
        return len(self.raw) // 4 + self.max_tokens * self.sequences


def parse_call(
    raw: bytes,
    kind: CallKind,
    *,
    default_max_tokens: int,
    max_sequences: int | None = None,
) -> CallRequest:
    """Parse and check a chat or completions body; raise MalformedRequest saying what is wrong
    (or that it asks for more than `max_sequences` sequences)."""
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
    choices = _choices(body)
    changed = strip_usage = False
    limit_keys = ["max_tokens"]
    if kind == "chat/completions":
        limit_keys.append("max_completion_tokens")
    given = [key for key in limit_keys if body.get(key) is not None]
    if not given:
        body["max_tokens"] = default_max_tokens
        changed = True
        given = ["max_tokens"]
    # a server reads one of the two; reserving the larger holds whichever it reads
    max_tokens = max(_positive_int(body, key, default_max_tokens) for key in given)
    if kind == "chat/completions":
        prompts, prefix = 1, _chat_prefix(body)
    else:
        prompts, prefix = _completion_prompts(body), _completion_prefix(body)
    if max_sequences is not None and prompts * choices > max_sequences:
        param = "n" if prompts == 1 else "prompt"
        raise MalformedRequest(
            f"the call asks for {prompts * choices} sequences ({prompts} prompt(s) x "
            f"{choices} per prompt); the gateway serves at most {max_sequences} per call "
            "([gateway].max_sequences_per_call): split it into smaller calls",
            param,
        )
    if stream:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise MalformedRequest("'stream_options' must be an object", "stream_options")
        # usage in the last chunk settles the budget with the real count; a caller that did
        # not ask for it must not receive it (`strip_usage`: the relay drops that chunk)
        if not (options or {}).get("include_usage"):
            body["stream_options"] = {**(options or {}), "include_usage": True}
            changed = strip_usage = True
    return CallRequest(
        kind, model, stream, max_tokens, choices, prompts, prefix, body, raw, changed, strip_usage
    )


def _choices(body: dict[str, Any]) -> int:
    """Sequences per prompt: `n` (also the beam width of `use_beam_search`), or `best_of`
    where larger (servers that honour it generate best_of and return n)."""
    choices = _positive_int(body, "n", 1)
    if body.get("best_of") is not None:
        choices = max(choices, _positive_int(body, "best_of", 1))
    beam = body.get("use_beam_search")
    if beam is not None and not isinstance(beam, bool):
        raise MalformedRequest(
            f"'use_beam_search' must be true or false, got {beam!r}", "use_beam_search"
        )
    return choices


def _completion_prompts(body: dict[str, Any]) -> int:
    """How many prompts a completions body holds: `prompt` (a string, a token-id list, or a
    list of either) plus `prompt_embeds` (one, or a list)."""
    prompt = body.get("prompt")
    count = 0
    if isinstance(prompt, str):
        count = 1
    elif isinstance(prompt, list):
        if not prompt:
            raise MalformedRequest("'prompt' must not be an empty list", "prompt")
        if all(_is_token(x) for x in prompt):
            count = 1  # one prompt given as token ids
        elif all(isinstance(x, str) for x in prompt) or all(_is_token_list(x) for x in prompt):
            count = len(prompt)
        else:
            raise MalformedRequest(
                "'prompt' must be a string, a list of token ids, a list of strings or a list "
                "of token-id lists (not a mix): the gateway cannot bound what it generates",
                "prompt",
            )
    elif prompt is not None:
        raise MalformedRequest("'prompt' must be a string or a list", "prompt")
    embeds = body.get("prompt_embeds")
    if isinstance(embeds, list):
        count += len(embeds)
    elif isinstance(embeds, str):
        count += 1
    elif embeds is not None:
        raise MalformedRequest(
            "'prompt_embeds' must be a string or a list of strings", "prompt_embeds"
        )
    if count == 0:
        raise MalformedRequest("'prompt' is required", "prompt")
    return count


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token(x) for x in value)


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
    if isinstance(prompt, list) and prompt and not _is_token(prompt[0]):
        prompt = prompt[0]
    if isinstance(prompt, list):  # token ids
        text = json.dumps(prompt[:512])
    elif isinstance(prompt, str):
        text = prompt
    else:  # prompt_embeds only: affinity by agent alone
        text = ""
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
