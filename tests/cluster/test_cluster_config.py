"""[cluster] in agentd.toml: what an operator gets wrong gets an error that says what and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.config import load_config
from agentd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentd.toml"
    path.write_text(text)
    return path


def test_a_cluster_needs_a_shared_nats(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[cluster]\nenabled = true\n"))
    assert "[cluster].enabled needs [bus].url" in str(err.value)


def test_a_node_name_must_fit_a_key(tmp_path: Path) -> None:
    text = '[bus]\nurl = "nats://a:4222"\n[cluster]\nenabled = true\nnode = "gpu.host.1"\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "cluster.node" in str(err.value) and "no dots" in str(err.value)


def test_defaults_name_the_node_after_the_host_and_replicate_three_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTD_NODE", "gpu-7")
    text = '[bus]\nurl = "nats://a:4222,nats://b:4222"\n[cluster]\nenabled = true\n'
    config = load_config(write(tmp_path, text)).config
    assert config.cluster.node == "gpu-7" and config.stream_replicas == 3
    assert load_config(write(tmp_path, "")).config.stream_replicas == 1  # one host: R1
