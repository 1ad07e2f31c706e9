"""[models.<pool>] in agentd.toml: the default tiny pool and the commented GPU line load, paths
resolve against the file, and every kind of bad value is named by its TOML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.config import load_config
from agentd.errors import ConfigError
from tests.harness import REPO


def test_the_default_config_serves_the_tiny_model_on_one_cpu_core() -> None:
    models = load_config(REPO / "agentd.toml").config.models
    assert sorted(models) == ["tiny"]
    tiny = models["tiny"]
    assert tiny.model == str(REPO / ".agentd" / "tiny-model")  # local: made absolute
    assert tiny.launcher.python == REPO / ".venv-vllm" / "bin" / "python"  # `make run` makes it
    assert tiny.device == "cpu" and tiny.replicas.min == tiny.replicas.max == 1
    assert tiny.cpu_cores_per_replica == 1 and tiny.liveness.failures == 2


def test_the_commented_gpu_line_adds_a_pool_on_gpus(tmp_path: Path) -> None:
    """Uncommenting the two lines under "The one line that serves a real model on GPUs"."""
    text = (REPO / "agentd.toml").read_text()
    gpu = text[text.index("# [models]\n") :].splitlines()[:2]
    path = tmp_path / "agentd.toml"
    path.write_text(text + "\n" + "\n".join(line[2:] for line in gpu) + "\n")
    models = load_config(path).config.models
    assert sorted(models) == ["qwen", "tiny"]
    qwen = models["qwen"]
    assert qwen.model == "Qwen/Qwen3-8B"  # a hub id stays as written
    assert qwen.launcher.command == ["vllm", "serve"] and qwen.device == "gpu"


def test_a_relative_launcher_python_resolves_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text('[models.m]\nmodel = "org/m"\nlauncher = { python = "venv/bin/python" }\n')
    pool = load_config(path).config.models["m"]
    assert pool.launcher.python == tmp_path / "venv" / "bin" / "python"
    assert pool.served_name is None and pool.max_num_seqs == 16


POOL = '[models.m]\nmodel = "org/m"\nlauncher = { python = "/x/python" }\n'
BAD = [
    ('[models.m]\nmodel = "org/m"\n', ["models.m.launcher: required key is missing"]),
    ('[models.m]\nmodel = "x"\nlauncher = {}\n', ["models.m.launcher: Value error, set exactly"]),
    (
        '[models.m]\nmodel = "x"\nlauncher = { python = "p", command = ["vllm"] }\n',
        ["models.m.launcher: Value error, set exactly one of python"],
    ),
    ('[models.Big]\nmodel = "x"\nlauncher = { command = ["v"] }\n', ["models.Big.[key]: String"]),
    (POOL + "replicas = { min = 3, max = 2 }\n", ["models.m.replicas: Value error, min (3)"]),
    (POOL + "device = 'tpu'\n", ["models.m.device: Input should be 'auto', 'gpu' or 'cpu'"]),
    (POOL + "gpu_memory_utilization = 1.5\n", ["models.m.gpu_memory_utilization: Input should"]),
    (POOL + "tensor_parallel_size = 0\n", ["models.m.tensor_parallel_size: Input should be"]),
    (POOL + "kv_cache_bytes = 1024\n", ["models.m.kv_cache_bytes: Input should be greater"]),
    (POOL + "liveness = { failures = 0 }\n", ["models.m.liveness.failures: Input should be"]),
    (POOL + "liveness = { interval = 5 }\n", ["models.m.liveness.interval: unknown key"]),
    (
        POOL + "autoscale = { up_waiting = 1, down_waiting = 1 }\n",
        ["models.m.autoscale: Value error, down_waiting must be below up_waiting"],
    ),
    (
        POOL + "autoscale = { up_kv_cache = 0.2 }\n",
        ["models.m.autoscale: Value error, down_kv_cache must be below up_kv_cache"],
    ),
    (POOL + "extra_args = '--x'\n", ["models.m.extra_args: Input should be a valid list"]),
    (POOL + "startup_timeout_s = 0\n", ["models.m.startup_timeout_s: Input should be greater"]),
    (POOL + "replica = 2\n", ["models.m.replica: unknown key"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1][0].split(":")[0] for b in BAD])
def test_a_bad_pool_is_rejected_with_its_path(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    for fragment in expected:
        assert any(fragment in p for p in info.value.problems), (fragment, info.value.problems)
