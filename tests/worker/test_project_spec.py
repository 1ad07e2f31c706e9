"""The agent spec's `project` key and `langgraph.json` import, without a daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.config import import_project, load_agent
from agentd.errors import SpecError


def _app(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "agent.py").write_text("graph = None\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "dep.py").write_text("x = 1\n")
    config = root / "langgraph.json"
    config.write_text(
        json.dumps({"dependencies": ["."], "graphs": {"agent": "./src/agent.py:graph"}})
    )
    return config


def test_an_imported_agents_version_covers_the_projects_sources(tmp_path: Path) -> None:
    config = _app(tmp_path / "app")
    project = import_project(config, tmp_path / "agents")
    assert [g.agent for g in project.graphs] == ["agent"]
    agent = load_agent(tmp_path / "agents" / "agent")
    assert agent.project == (tmp_path / "app").resolve()
    assert agent.graph_file == agent.project / "src" / "agent.py"
    before = agent.version
    (tmp_path / "app" / ".venv" / "lib" / "dep.py").write_text("x = 2\n")  # not a source
    assert load_agent(tmp_path / "agents" / "agent").version == before
    (tmp_path / "app" / "src" / "helpers.py").write_text("y = 1\n")
    assert load_agent(tmp_path / "agents" / "agent").version != before


def test_a_project_spec_names_what_is_wrong(tmp_path: Path) -> None:
    folder = tmp_path / "agents" / "bot"
    folder.mkdir(parents=True)
    spec = folder / "agent.toml"
    spec.write_text('name = "bot"\ngraph = "src/agent.py:graph"\nproject = "../../nowhere"\n')
    with pytest.raises(SpecError, match="project: folder .*nowhere not found"):
        load_agent(folder)
    _app(tmp_path / "app")
    spec.write_text('name = "bot"\ngraph = "../secret.py:graph"\nproject = "../../app"\n')
    with pytest.raises(SpecError, match="must name a file inside"):
        load_agent(folder)
    spec.write_text('name = "bot"\ngraph = "src/missing.py:graph"\nproject = "../../app"\n')
    with pytest.raises(SpecError, match="module file missing.py not found"):
        load_agent(folder)


def test_a_bad_langgraph_json_is_refused_whole_naming_each_problem(tmp_path: Path) -> None:
    config = _app(tmp_path / "app")
    config.write_text(
        json.dumps(
            {
                "dependencies": "langgraph",
                "graphs": {
                    "ctl": "./src/agent.py:graph",  # a reserved name
                    "a b": "./src/agent.py:graph",
                    "A B": "./src/agent.py:graph",  # both become "a-b"
                    "gone": "./src/gone.py:graph",
                    "up": "../outside.py:graph",
                    "nothing": 42,
                },
                "env": 7,
            }
        )
    )
    with pytest.raises(SpecError) as refused:
        import_project(config, tmp_path / "agents")
    text = str(refused.value)
    for expected in (
        "graphs.ctl: cannot be an agent name ('ctl' is reserved",
        "graphs.A B: its agent name 'a-b' is taken by graph 'a b'",
        "graphs.gone: ",
        "graphs.up: '../outside.py:graph' is not a file or module inside the project",
        'graphs.nothing: must be "path/file.py:attr" or "module:attr"',
        "dependencies: must be a list of strings",
        "env: must be a .env file's path or an object of variables",
    ):
        assert expected in text, (expected, text)
    assert not (tmp_path / "agents").exists()  # nothing written
