"""The tiny model's files: layout, determinism, tokenizer, output bias and chat template."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from agentd.inference import MODEL_FILES, build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_json(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return value


def test_build_writes_exactly_the_model_files(tiny_model_dir: Path) -> None:
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == sorted(MODEL_FILES)


def test_same_seed_gives_byte_identical_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    for name in MODEL_FILES:
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_seed_changes_weights_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    for name in MODEL_FILES:
        same = (other / name).read_bytes() == (tiny_model_dir / name).read_bytes()
        assert same == (name != "model.safetensors"), name


def test_rebuild_in_place_overwrites(tmp_path: Path) -> None:
    build_tiny_model(tmp_path, seed=1)
    (tmp_path / "config.json").write_text("{}")
    build_tiny_model(tmp_path, seed=1)
    assert load_json(tmp_path / "config.json")["model_type"] == "llama"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MODEL_FILES)


def test_config_matches_weights_and_tokenizer(tiny_model_dir: Path) -> None:
    config = load_json(tiny_model_dir / "config.json")
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    weights = load_file(str(tiny_model_dir / "model.safetensors"))

    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"]) == (128, 2)
    assert config["num_attention_heads"] == 4
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    assert 3500 <= tokenizer.get_vocab_size() <= vocab
    assert config["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    assert (
        load_json(tiny_model_dir / "generation_config.json")["eos_token_id"]
        == (config["eos_token_id"])
    )

    layer = "model.layers.{}."
    expected = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for i in range(config["num_hidden_layers"]):
        p = layer.format(i)
        expected |= {
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (hidden, hidden),
            p + "self_attn.v_proj.weight": (hidden, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (config["intermediate_size"], hidden),
            p + "mlp.up_proj.weight": (config["intermediate_size"], hidden),
            p + "mlp.down_proj.weight": (hidden, config["intermediate_size"]),
        }
    assert {name: w.shape for name, w in weights.items()} == expected
    assert all(w.dtype == np.float16 and np.isfinite(w).all() for w in weights.values())
    assert config["torch_dtype"] == "float16"


def test_tokenizer_round_trips_and_keeps_markup_whole(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    text = 'def f(x):\n    return {"naïve": [1, 2.5, "日本"]}  # ok\t\x00'
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    for markup in ("<tool_call>", "</tool_call>", "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer.encode(f"a{markup}b").ids) == 3, markup
    # Markup is text to the decoder (vLLM's hermes parser must see it); turn tokens are not.
    ids = tokenizer.encode("<|im_start|>x<tool_call>").ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "x<tool_call>"


def test_output_layer_bias_pushes_down_whitespace_control_and_broken_utf8(
    tiny_model_dir: Path,
) -> None:
    # The bias lives in one column of lm_head (the residual dimension the embedding holds
    # constant); read it back and check it against what each token decodes to.
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    embed = weights["model.embed_tokens.weight"].astype(np.float32)
    constant_dims = np.flatnonzero(np.ptp(embed, axis=0) == 0)
    assert len(constant_dims) == 1
    bias = weights["lm_head.weight"][:, constant_dims[0]].astype(np.float32)

    def bias_of(text: str) -> float:
        ids = tokenizer.encode(text).ids
        assert len(ids) == 1, text
        return float(bias[ids[0]])

    ordinary = [bias_of(t) for t in ("def", " return", "self", "x", "0", "_")]
    assert max(ordinary) - min(ordinary) < 1e-3
    for bad in (" ", "\n", "    ", "\n\n", "\t", "\x00", "\x1b"):
        assert bias_of(bad) < min(ordinary) - 10, repr(bad)
    broken = tokenizer.token_to_id("\u00c3")  # byte 0xC3 alone: half of a UTF-8 character
    assert broken is not None and bias[broken] < min(ordinary) - 10
    for closer in ('"', "}", "]", "<|im_end|>"):
        assert bias_of(closer) > max(ordinary) + 5, closer
    assert bias_of("<|im_start|>") < min(ordinary) - 10


def hf_like_environment() -> jinja2.Environment:
    """The Jinja setup transformers uses to render chat templates."""

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render(model_dir: Path, **context: Any) -> str:
    template = load_json(model_dir / "tokenizer_config.json")["chat_template"]
    rendered: str = hf_like_environment().from_string(template).render(**context)
    return rendered


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Forecast",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_chat_template_renders_tools_calls_and_results(tiny_model_dir: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": "14C"},
        {"role": "tool", "tool_call_id": "2", "content": "2C"},
        {"role": "assistant", "content": "Mild in Paris, cold in Oslo."},
    ]
    prompt = render(tiny_model_dir, messages=messages, tools=[WEATHER], add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"name": "get_weather", "description": "Forecast", "parameters": {"type": "object", '
        '"properties": {"city": {"type": "string"}}}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n14C\n</tool_response>\n"
        "<tool_response>\n2C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nMild in Paris, cold in Oslo.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # What vLLM's hermes parser does with an assistant turn.
    turns = prompt.split("<|im_start|>assistant\n")
    calls = re.findall(r"<tool_call>(.*?)</tool_call>", turns[1], re.DOTALL)
    assert [json.loads(c)["arguments"]["city"] for c in calls] == ["Paris", "Oslo"]


def test_chat_template_without_tools(tiny_model_dir: Path) -> None:
    plain = render(tiny_model_dir, messages=[{"role": "user", "content": "hi"}])
    assert plain == "<|im_start|>user\nhi<|im_end|>\n"
    system = render(
        tiny_model_dir,
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
    )
    assert system == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )


def test_chat_template_rejects_unknown_roles(tiny_model_dir: Path) -> None:
    with pytest.raises(jinja2.TemplateError, match="unknown message role: critic"):
        render(tiny_model_dir, messages=[{"role": "critic", "content": "no"}])


def test_module_command_builds_the_same_model_in_seconds(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Another process (another hash seed, thread schedule) must still give the same bytes.
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "agentd.inference.tiny_model", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "m")
    for name in MODEL_FILES:
        assert (tmp_path / "m" / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    assert elapsed < 10.0
