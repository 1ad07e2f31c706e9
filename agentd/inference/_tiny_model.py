"""Build a tiny random-weight Llama model that vLLM can serve on a CPU, offline, in seconds.

The model is for machines with no GPU and no network: tests, demos and the default
configuration. It knows nothing, but with vLLM's structured outputs it emits valid JSON, so strict
tool calls and ``response_format`` requests work end to end.

Pure random weights mostly pick whitespace, control characters and pieces of multi-byte UTF-8
characters, and, inside a JSON string, rarely pick the closing quote, so a constrained completion
runs out of tokens before the JSON ends. Llama has no output-layer bias, so one is built from its
weights: one residual dimension holds a constant (set by the embedding; no layer reads or writes
it) and the output layer's column for that dimension is the bias. It pushes down whitespace-only,
control, broken-UTF-8, unused and special tokens, and pushes up the tokens that close a JSON
string, object or array, so constrained values stay short and end.

Only numpy, safetensors and tokenizers are needed (no torch, no transformers). The same seed on
the same Python gives byte-identical files.

Run it as ``python -m agentd.inference.tiny_model DIR [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from agentd.inference._chat_template import (
    BOS_TOKEN,
    CHAT_TEMPLATE,
    MARKUP_TOKENS,
    SPECIAL_TOKENS,
    TURN_END_TOKEN,
)

__all__ = ["MODEL_FILES", "build_tiny_model", "main"]

MODEL_FILES: Final = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

VOCAB_SIZE: Final = 4096
HIDDEN_SIZE: Final = 128
INTERMEDIATE_SIZE: Final = 256
NUM_LAYERS: Final = 2
NUM_HEADS: Final = 4
MAX_POSITIONS: Final = 2048
# Enough source text for 4k merges; the sorted top-level stdlib modules keep the build fast.
CORPUS_BYTES: Final = 2_000_000

# The residual dimension that carries the constant behind the output bias.
_BIAS_DIM: Final = HIDDEN_SIZE - 1
_BIAS_CONSTANT: Final = 1.0
# What the constant dimension holds after the final RMSNorm: _BIAS_CONSTANT / rms of the
# residual stream, measured with transformers on this architecture: 0.69-0.80 over a chat prompt.
_BIAS_DIM_AFTER_NORM: Final = 0.72
# Logit offsets. The context-dependent part of the logits has a standard deviation of about
# _LOGIT_SCALE, over ~4000 tokens. The closing quote at +9 outweighs all of the text tokens a
# grammar allows inside a JSON string, so a string ends after a few tokens when sampling at
# temperature 1 and at once when greedy; a closing brace or bracket (+7.5) beats a comma, so
# objects and arrays end as soon as the schema allows. The end-of-turn token ends free text the
# same way. Suppressed tokens never win while anything else is allowed.
_LOGIT_SCALE: Final = 1.0
_SUPPRESS: Final = -30.0
_BOOSTS: Final = {'"': 9.0, "}": 7.5, "]": 7.5}
_EOS_BOOST: Final = 9.0
# Weights are stored in float16: half the size of float32, which vLLM would downcast anyway
# (numpy has no bfloat16), and exact enough for logits of this size.
_DTYPE: Final = np.float16


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny Llama model (weights, tokenizer, chat template) into ``out_dir``.

    Creates ``out_dir`` if needed and overwrites the files in ``MODEL_FILES``. Returns
    ``out_dir``. Deterministic: the same ``seed`` (and the same standard library to train the
    tokenizer on) gives byte-identical files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab_size > VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {vocab_size} tokens, more than {VOCAB_SIZE}")
    ids = {token: _token_id(tokenizer, token) for token in (*SPECIAL_TOKENS, *MARKUP_TOKENS)}

    bias = _output_bias(tokenizer, eos_id=ids[TURN_END_TOKEN])
    weights = _random_weights(np.random.default_rng(seed), bias)

    _write_file(out_dir / "tokenizer.json", tokenizer.to_str(pretty=False).encode())
    tensors = {name: tensor.astype(_DTYPE) for name, tensor in weights.items()}
    _write_file(out_dir / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    _write_json(out_dir / "config.json", _model_config(ids[BOS_TOKEN], ids[TURN_END_TOKEN]))
    _write_json(
        out_dir / "generation_config.json",
        {
            "bos_token_id": ids[BOS_TOKEN],
            "eos_token_id": ids[TURN_END_TOKEN],
            "pad_token_id": ids[BOS_TOKEN],
        },
    )
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(ids))
    return out_dir


def _corpus() -> Iterator[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    budget = CORPUS_BYTES
    for path in sorted(stdlib.glob("*.py")):
        if budget <= 0:
            return
        text = path.read_bytes()[:budget].decode("utf-8", errors="replace")
        budget -= len(text)
        yield text


def _train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(MARKUP_TOKENS),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    return tokenizer


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"token {token!r} missing from the trained tokenizer")
    return int(token_id)


# GPT-2's byte-level alphabet: byte b is written as the character _BYTE_CHARS[b].
def _byte_chars() -> list[str]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


_CHAR_TO_BYTE: Final = {c: b for b, c in enumerate(_byte_chars())}


def _token_text(token: str) -> str | None:
    """The text a byte-level token stands for; None when its bytes are not whole UTF-8."""
    try:
        raw = bytes(_CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _output_bias(tokenizer: Tokenizer, *, eos_id: int) -> npt.NDArray[np.float32]:
    bias = np.full(VOCAB_SIZE, _SUPPRESS, dtype=np.float32)  # unused ids stay suppressed
    for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
        # The markup tokens are plain text (neutral): a tool-call grammar spells them.
        if token in SPECIAL_TOKENS:
            continue
        text = _token_text(token)
        if text is None or text.isspace() or any(_is_control(c) for c in text):
            continue
        bias[token_id] = _BOOSTS.get(text, 0.0)
    bias[eos_id] = _EOS_BOOST
    return bias


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0


def _random_weights(
    rng: np.random.Generator, bias: npt.NDArray[np.float32]
) -> dict[str, npt.NDArray[np.float32]]:
    def normal(*shape: int, std: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_weight() -> npt.NDArray[np.float32]:
        weight = np.ones(HIDDEN_SIZE, dtype=np.float32)
        weight[_BIAS_DIM] = 0.0  # the layers do not see the constant
        return weight

    h, i = HIDDEN_SIZE, INTERMEDIATE_SIZE
    embed = normal(VOCAB_SIZE, h, std=1.0)
    embed[:, _BIAS_DIM] = _BIAS_CONSTANT
    weights = {"model.embed_tokens.weight": embed}
    for layer in range(NUM_LAYERS):
        prefix = f"model.layers.{layer}."
        o_proj = normal(h, h, std=h**-0.5)
        down_proj = normal(h, i, std=i**-0.5)
        o_proj[_BIAS_DIM] = 0.0  # nor do they write to it
        down_proj[_BIAS_DIM] = 0.0
        weights |= {
            prefix + "input_layernorm.weight": norm_weight(),
            prefix + "self_attn.q_proj.weight": normal(h, h, std=h**-0.5),
            prefix + "self_attn.k_proj.weight": normal(h, h, std=h**-0.5),
            prefix + "self_attn.v_proj.weight": normal(h, h, std=h**-0.5),
            prefix + "self_attn.o_proj.weight": o_proj,
            prefix + "post_attention_layernorm.weight": norm_weight(),
            prefix + "mlp.gate_proj.weight": normal(i, h, std=h**-0.5),
            prefix + "mlp.up_proj.weight": normal(i, h, std=h**-0.5),
            prefix + "mlp.down_proj.weight": down_proj,
        }
    weights["model.norm.weight"] = np.ones(h, dtype=np.float32)
    # After the final RMSNorm the other dimensions hold a vector of norm about sqrt(h), so
    # weights of std _LOGIT_SCALE / sqrt(h) give context-dependent logits of std ~_LOGIT_SCALE.
    lm_head = normal(VOCAB_SIZE, h, std=_LOGIT_SCALE * h**-0.5)
    lm_head[:, _BIAS_DIM] = bias / _BIAS_DIM_AFTER_NORM
    weights["lm_head.weight"] = lm_head
    return weights


def _model_config(bos_id: int, eos_id: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_HEADS,
        "head_dim": HIDDEN_SIZE // NUM_HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": bos_id,
        "torch_dtype": "float16",
        "use_cache": True,
    }


def _tokenizer_config(ids: dict[str, int]) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": TURN_END_TOKEN,
        "pad_token": BOS_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "added_tokens_decoder": {
            str(token_id): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": token in SPECIAL_TOKENS,
            }
            for token, token_id in sorted(ids.items(), key=lambda item: item[1])
        },
        "chat_template": CHAT_TEMPLATE,
    }


def _write_json(path: Path, value: dict[str, Any]) -> None:
    _write_file(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _write_file(path: Path, data: bytes) -> None:
    # Replace, never truncate: a server reading the directory sees the old file or the new one.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m agentd.inference.tiny_model DIR [--seed N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m agentd.inference.tiny_model",
        description="Build a tiny random-weight Llama model that vLLM can serve on a CPU.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, seed=args.seed)
    print(path)
    return 0
