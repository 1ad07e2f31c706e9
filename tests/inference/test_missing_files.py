"""What a pool needs on this host and does not find stops `agentd run` before anything starts,
each problem naming its TOML path."""

from __future__ import annotations

from pathlib import Path

from agentd.config import ModelPoolConfig
from agentd.inference import missing_files


def pool(model: Path, python: Path) -> ModelPoolConfig:
    return ModelPoolConfig.model_validate(
        {"model": str(model), "launcher": {"python": str(python)}}
    )


def test_a_missing_model_directory_and_interpreter_are_named(tmp_path: Path) -> None:
    problems = missing_files({"tiny": pool(tmp_path / "no-model", tmp_path / "no-python")})
    assert len(problems) == 2
    assert problems[0].startswith("models.tiny.model: no model directory at")
    assert "agentd models build-tiny" in problems[0]
    assert problems[1].startswith("models.tiny.launcher.python: no interpreter at")


def test_a_pool_with_its_files_in_place_has_no_problem(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "python").touch()
    assert missing_files({"tiny": pool(tmp_path / "model", tmp_path / "python")}) == []
    # a hub id is not a local path: nothing to check here
    hub = ModelPoolConfig.model_validate(
        {"model": "org/model", "launcher": {"python": str(tmp_path / "python")}}
    )
    assert missing_files({"hub": hub}) == []
