"""`agentd models build-tiny` and the `agentctl models` table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentd.cli._models_view import render_models
from agentd.inference import MODEL_FILES


def build_tiny(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTD_CONFIG": "/nonexistent/agentd.toml"}  # needs no config
    return subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "models", "build-tiny", str(directory), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_build_tiny_writes_the_same_model_every_time(tmp_path: Path) -> None:
    first, second = build_tiny(tmp_path / "a"), build_tiny(tmp_path / "b")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert f"tiny model in {tmp_path / 'a'}" in first.stdout
    for name in MODEL_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = build_tiny(tmp_path / "c", "--seed", "1")
    assert other.returncode == 0, other.stderr
    weights = "model.safetensors"
    assert (tmp_path / "c" / weights).read_bytes() != (tmp_path / "a" / weights).read_bytes()


def test_build_tiny_says_when_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = build_tiny(tmp_path / "file" / "model")
    assert result.returncode == 1
    assert result.stderr.startswith(f"agentd: cannot write the tiny model to {tmp_path}/file/model")


def member(name: str, state: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "pid": 42,
        "placement": {"device": "cpu", "cores": "0", "kv_cache_bytes": 2**26},
        "restarts": 0,
        "load": None,
        "error": None,
        "loading": None,
        **fields,
    }


def pool(name: str, members: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "pool": name,
        "model": "/models/tiny",
        "revision": None,
        "served_name": name,
        "replicas": {"min": 1, "max": 2},
        "desired": len(members),
        "last_decision": None,
        "members": members,
        **fields,
    }


def test_the_models_table_shows_placement_load_and_progress() -> None:
    text = render_models(
        [
            pool(
                "tiny",
                [
                    member(
                        "tiny-0",
                        "ready",
                        restarts=2,
                        load={"running": 3.0, "waiting": 5.0, "kv_cache_pct": 41.7},
                    ),
                    member(
                        "tiny-1",
                        "loading",
                        placement={"device": "cpu", "cores": "1", "kv_cache_bytes": 2**26},
                        loading={"elapsed_s": 12.4, "timeout_s": 300.0, "last_line": "Loading"},
                    ),
                ],
                last_decision={"change": "1->2", "reason": "5.0 waiting per replica >= 2"},
            ),
            pool(
                "big",
                [
                    member(
                        "big-0",
                        "restarting",
                        placement={"device": "gpu", "gpus": [0, 1]},
                        error="was killed as unhealthy (2 probes failed in a row)",
                    )
                ],
                revision="abc",
            ),
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == [
        "POOL",
        "REPLICA",
        "STATE",
        "PLACEMENT",
        "PID",
        "RESTARTS",
        "RUNNING",
        "WAITING",
        "KV_CACHE",
        "PROGRESS",
        "/",
        "ERROR",
    ]
    assert lines[1].split() == ["tiny", "(2/1..2)", "tiny-0", "ready", "cpu", "0", "42", "2"] + [
        "3.0",
        "5.0",
        "42%",
        "-",  # no progress or error to show
    ]
    assert lines[2].split()[2:5] == ["tiny-1", "loading", "cpu"]
    assert lines[2].endswith("12s/300s: Loading")
    assert "gpu 0,1" in lines[3] and lines[3].endswith(
        "was killed as unhealthy (2 probes failed in a row)"
    )
    assert "tiny: last scaling 1->2: 5.0 waiting per replica >= 2" in text
    assert "big: serves /models/tiny@abc as 'big'" in text


def test_no_pools_says_how_to_configure_one() -> None:
    assert "[models.<pool>]" in render_models([])
