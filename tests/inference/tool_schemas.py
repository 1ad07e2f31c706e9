"""Tool and response schemas for the tiny-model tests and benchmark, as pydantic models.

Each tool's JSON schema comes from its model, and its arguments are validated by that model
(strict: no coercion, no extra keys), so "valid" means what the schema says.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    city: str = Field(max_length=40)
    days: int = Field(ge=1, le=7)
    unit: Literal["celsius", "fahrenheit"]
    tags: list[str] = Field(max_length=3)


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    query: str = Field(max_length=60)
    limit: int = Field(ge=1, le=10)
    exact: bool


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    title: str = Field(max_length=40)
    confidence: float = Field(ge=0, le=1)


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    summary: str = Field(max_length=80)
    severity: Literal["low", "medium", "high"]
    findings: list[Finding] = Field(max_length=3)
    resolved: bool


ARGUMENT_MODELS: dict[str, type[BaseModel]] = {
    "get_weather": WeatherArgs,
    "search_docs": SearchArgs,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')}",
            "parameters": model.model_json_schema(),
            "strict": True,
        },
    }
    for name, model in ARGUMENT_MODELS.items()
]
PROMPTS = [
    "What is the weather in Paris this week?",
    "Find the docs about retry policies.",
    "Will it rain in Tokyo tomorrow?",
    "Search for 'exponential backoff' exactly.",
    "Forecast for Lagos, in fahrenheit, three days.",
    "Look up how agents register over NATS.",
    "Is it cold in Oslo?",
    "Find at most two pages on Casbin.",
    "Weather in Buenos Aires for the weekend, please.",
    "Search: vLLM CPU startup time",
]


def tool_request(index: int, *, max_tokens: int = 256) -> dict[str, Any]:
    """Chat request `index`: a prompt from PROMPTS, forced or named tool choice (alternating in
    pairs), greedy or sampled decoding (alternating)."""
    named = list(ARGUMENT_MODELS)[index % 2]
    tool_choice: object = (
        "required" if index % 4 < 2 else {"type": "function", "function": {"name": named}}
    )
    return {
        "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "temperature": 0.0 if index % 2 else 1.0,
        "seed": index,
        "max_tokens": max_tokens,
    }


def tool_call_problems(request: dict[str, Any], message: dict[str, Any]) -> list[str]:
    """Why `message` is not a valid answer to `request` (empty when it is)."""
    calls = message.get("tool_calls") or []
    if not calls:
        return [f"no tool call in {message}"]
    problems = []
    choice = request["tool_choice"]
    for call in calls:
        name = call["function"]["name"]
        arguments = call["function"]["arguments"]
        if choice != "required" and name != choice["function"]["name"]:
            problems.append(f"called {name}, not the named tool")
        elif name not in ARGUMENT_MODELS:
            problems.append(f"called unknown tool {name}")
        else:
            try:
                ARGUMENT_MODELS[name].model_validate_json(arguments)
            except ValidationError as error:
                problems.append(f"{name}({arguments}): {error}")
    return problems
