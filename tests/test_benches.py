"""Benchmarks do not rot: every script in bench/ is in the runner's table (bench/run_all.py, what
`make bench` runs), each runs here in smoke mode (small counts, the JSON it always prints, no
figure judged) or in the test its table row names, and the runner reports every bench and fails
when one fails."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.harness import REPO


def _load_runner() -> ModuleType:
    # bench/ is a folder of scripts, not a package
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "bench" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


RUN_ALL = _load_runner()
NOT_BENCHES = {"_common", "run_all"}


def _has_smoke_mode(name: str) -> bool:
    return '"--smoke"' in (REPO / "bench" / f"{name}.py").read_text()


def _param(bench: Any) -> Any:
    name = bench.name
    marks: list[pytest.MarkDecorator] = [pytest.mark.timeout(bench.smoke_timeout_s + 60)]
    if bench.vllm:
        marks += [
            pytest.mark.vllm,
            pytest.mark.skipif(
                os.environ.get("AGENTD_REQUIRE_VLLM") != "1",
                reason="starts vLLM servers: runs when AGENTD_REQUIRE_VLLM=1 (make test)",
            ),
        ]
    return pytest.param(bench, id=name, marks=marks)


def test_every_bench_script_is_in_the_runners_table() -> None:
    scripts = {path.stem for path in (REPO / "bench").glob("*.py")} - NOT_BENCHES
    names = [bench.name for bench in RUN_ALL.BENCHES]
    assert len(names) == len(set(names)), names
    assert scripts == set(names), (
        f"missing from BENCHES in bench/run_all.py: {sorted(scripts - set(names))}; "
        f"in the table but not in bench/: {sorted(set(names) - scripts)}"
    )


def test_every_bench_has_a_smoke_mode() -> None:
    names = {bench.name for bench in RUN_ALL.BENCHES}
    assert [name for name in sorted(names) if not _has_smoke_mode(name)] == []


@pytest.mark.parametrize(
    "bench", [b for b in RUN_ALL.BENCHES if b.smoke_test], ids=lambda b: str(b.name)
)
def test_a_bench_smoke_tested_elsewhere_is_run_there(bench: Any) -> None:
    name, where = bench.name, REPO / bench.smoke_test
    assert where.is_file(), f"{name}: {where} does not exist"
    text = where.read_text()
    assert f'"{name}.py"' in text and '"--smoke"' in text, f"{where} does not run {name} --smoke"


@pytest.mark.parametrize("bench", [_param(b) for b in RUN_ALL.BENCHES if not b.smoke_test])
def test_the_bench_runs_in_smoke_mode(bench: Any) -> None:
    entry = RUN_ALL.run_one(bench, smoke=True)
    assert entry["ok"], f"{entry.get('error')}\n{entry.get('stderr_tail', '')}"
    assert entry["exit_status"] == 0
    assert isinstance(entry["output"], dict) and entry["output"], entry["output"]


SCRIPTS = {
    "prints": "import json; print(json.dumps({'figure': 1.5}))",
    "fails": "import sys; print('half a line'); sys.exit(3)",
    "babbles": "print('not json')",
    "hangs": "import time; time.sleep(30)",
}


def test_the_runner_reports_every_bench_and_fails_when_one_does(tmp_path: Path) -> None:
    for name, source in SCRIPTS.items():
        (tmp_path / f"{name}.py").write_text(source + "\n")
    # the failing ones first: the runner goes on after each
    order = ["fails", "hangs", "babbles", "prints"]
    benches = [RUN_ALL.Bench(name, smoke_timeout_s=2) for name in order]
    report = tmp_path / "out" / "report.json"
    status = RUN_ALL.run_benches(benches, smoke=True, report=report, bench_dir=tmp_path)
    body = json.loads(report.read_text())
    assert status == 1
    assert body["mode"] == "smoke" and body["failed"] == ["fails", "hangs", "babbles"]
    entries = {entry["name"]: entry for entry in body["benches"]}
    assert list(entries) == order
    assert entries["prints"]["ok"] and entries["prints"]["output"] == {"figure": 1.5}
    assert entries["prints"]["exit_status"] == 0 and entries["prints"]["argv"][-1] == "--smoke"
    assert entries["fails"]["exit_status"] == 3 and "status 3" in entries["fails"]["error"]
    assert "half a line" in entries["fails"]["error"]  # what it printed, not JSON: reported
    assert entries["hangs"]["error"].startswith("timed out after 2 s;")
    assert "not one JSON document" in entries["babbles"]["error"]
    assert all(entry["duration_s"] >= 0 for entry in entries.values())


def test_the_runner_passes_when_every_bench_does(tmp_path: Path) -> None:
    (tmp_path / "prints.py").write_text(SCRIPTS["prints"] + "\n")
    report = tmp_path / "report.json"
    bench = RUN_ALL.Bench("prints", smoke_timeout_s=30)
    status = RUN_ALL.run_benches([bench], smoke=False, report=report, bench_dir=tmp_path)
    body = json.loads(report.read_text())
    assert status == 0 and body["failed"] == [] and body["mode"] == "full"
    assert body["benches"][0]["argv"] == [str(tmp_path / "prints.py")]  # full mode: no --smoke
