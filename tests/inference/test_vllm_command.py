"""The vLLM launch command line and environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.inference import VLLM_SERVER_MODULE, vllm_command

PYTHON = Path("/opt/vllm/bin/python")


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_command_runs_the_server_module_with_the_model() -> None:
    argv, env = vllm_command(
        PYTHON,
        Path("/models/tiny"),
        "tiny",
        "127.0.0.1",
        8011,
        cache_dir=Path("/c"),
        base_env={"PATH": "/bin", "HF_HUB_OFFLINE": "0"},
    )
    assert argv[:3] == [str(PYTHON), "-m", VLLM_SERVER_MODULE]
    assert option(argv, "--model") == "/models/tiny"
    assert option(argv, "--served-model-name") == "tiny"
    assert (option(argv, "--host"), option(argv, "--port")) == ("127.0.0.1", "8011")
    assert (option(argv, "--max-model-len"), option(argv, "--max-num-seqs")) == ("2048", "8")
    assert option(argv, "--kv-cache-memory-bytes") == str(2**30)
    assert option(argv, "--tool-call-parser") == "hermes"
    assert "--enable-auto-tool-choice" in argv and "--enforce-eager" in argv
    assert json.loads(option(argv, "--structured-outputs-config")) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert env == {
        "PATH": "/bin",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_OMP_THREADS_BIND": "auto",
        "VLLM_CACHE_ROOT": "/c",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def test_options_reach_the_command_and_extra_args_come_last() -> None:
    argv, env = vllm_command(
        PYTHON,
        Path("/m"),
        "m",
        "0.0.0.0",
        9000,
        cache_dir=Path("/c"),
        base_env={"VLLM_CPU_KVCACHE_SPACE": "4", "LANG": "C"},
        max_model_len=4096,
        max_num_seqs=2,
        cpu_threads_bind="1",
        kv_cache_bytes=3 * 2**20,
        tool_call_parser=None,
        extra_args=["--seed", "7"],
    )
    assert (option(argv, "--max-model-len"), option(argv, "--max-num-seqs")) == ("4096", "2")
    assert "--tool-call-parser" not in argv and "--enable-auto-tool-choice" not in argv
    assert argv[-2:] == ["--seed", "7"]
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    # The legacy variable would override the size given on the command line.
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and env["LANG"] == "C"
    assert option(argv, "--kv-cache-memory-bytes") == str(3 * 2**20)


@pytest.mark.parametrize(
    ("port", "max_model_len", "max_num_seqs", "kv_cache_bytes"),
    [(0, 2048, 8, 1), (70000, 2048, 8, 1), (8000, 0, 8, 1), (8000, 2048, 0, 1), (8000, 2048, 8, 0)],
)
def test_rejects_impossible_values(
    port: int, max_model_len: int, max_num_seqs: int, kv_cache_bytes: int
) -> None:
    with pytest.raises(ValueError):
        vllm_command(
            PYTHON,
            Path("/m"),
            "m",
            "127.0.0.1",
            port,
            cache_dir=Path("/c"),
            base_env={},
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            kv_cache_bytes=kv_cache_bytes,
        )
