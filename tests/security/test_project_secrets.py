"""An imported LangGraph project is read by its agent's replicas: the spec key that grants it
follows the sandbox.read rule, so no project can hand a graph agentd's secrets."""

from __future__ import annotations

from pathlib import Path

from agentd.config import load_agent, load_config
from agentd.daemon._sandbox import agent_sandbox_problems, replica_plan
from tests.harness import write_config


def test_a_project_holding_agentds_secrets_is_refused(tmp_path: Path) -> None:
    """A replica reads its project: a project that is, or holds, the state directory would
    hand a (possibly hostile) graph the daemon's keys and credentials to read."""
    config = load_config(write_config(tmp_path, agents_dir=tmp_path / "agents")).config
    (tmp_path / "state").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "agent.py").write_text("graph = None\n")
    (tmp_path / "state" / "agent.py").write_text("graph = None\n")
    folder = tmp_path / "agents" / "bot"
    folder.mkdir(parents=True)
    for project, refused in (("../..", True), ("../../state", True), ("../../src", False)):
        graph = "src/agent.py:graph" if project == "../.." else "agent.py:graph"
        text = f'name = "bot"\ngraph = "{graph}"\nproject = "{project}"\n'
        (folder / "agent.toml").write_text(text)
        problems = agent_sandbox_problems(config, load_agent(folder))
        assert bool(problems) is refused, (project, problems)
        if refused:
            assert problems[0].startswith(f"project = {project!r}: ")
            assert "agentd's secrets" in problems[0]
        if not refused:  # the control: the key does grant reading the project
            agent = load_agent(folder)
            plan = replica_plan(
                config, agent, {}, abi=6, scratch=tmp_path / "scratch", checkpoints=None
            )
            assert (str(agent.project), "read") in plan.fs
