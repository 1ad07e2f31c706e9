"""Nothing the software accepts is undocumented: every configuration field appears in
agentd.toml (which says it shows every key), and every agentctl / agentd verb and flag appears
in the docs. Both read the real models and parsers, so a new key, verb or flag fails here until
its documentation comes with it.
"""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

from pydantic import BaseModel

from agentd.cli import agentctl, agentd
from agentd.config import Config
from tests.harness import REPO

_HEADER = re.compile(r"^#?\s*\[+([^\]]+)\]+\s*(#.*)?$")
_KEY = re.compile(r"^#?\s*([A-Za-z_]\w*)\s*=\s*(.*)$")
_INLINE_KEY = re.compile(r"([A-Za-z_]\w*)\s*=")
# tables whose keys are names the user picks: [models.<pool>], [tools.mcp.<server>], ...
_DICT_TABLES = ("models", "tools.mcp", "tools.overrides")


def _table(header: str) -> str:
    path = header.strip()
    for prefix in _DICT_TABLES:
        if path.startswith(prefix + ".") and path != "tools.mcp_endpoint":
            return prefix + ".*"
    return path


def documented_keys(text: str) -> set[str]:
    """Dotted paths of the keys agentd.toml shows, set or commented out (`# key = ...`)."""
    found: set[str] = set()
    table = ""
    for line in text.splitlines():
        if header := _HEADER.match(line):
            table = _table(header.group(1))
            found.add(table)
            continue
        if not (key := _KEY.match(line)):
            continue
        name, value = key.groups()
        prefix = f"{table}.{name}" if table else name
        if table == "models" and value.lstrip().startswith("{"):  # [models] qwen = { ... }
            prefix = "models.*"
        else:
            found.add(prefix)
        if value.lstrip().startswith("{"):
            found.update(f"{prefix}.{inner}" for inner in _INLINE_KEY.findall(value))
    return found


def config_fields(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    """Dotted paths of every field of the configuration model (`*` for a user-named table)."""
    fields: set[str] = set()
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}{key}"
        annotation = info.annotation
        args = typing.get_args(annotation)
        candidates = (annotation, *args)
        nested = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
        if typing.get_origin(annotation) is dict and nested:
            fields |= config_fields(nested[0], f"{path}.*.")
        elif nested:
            fields.add(path)
            fields |= config_fields(nested[0], f"{path}.")
        else:
            fields.add(path)
    return fields


def test_agentd_toml_shows_every_configuration_key() -> None:
    shown = documented_keys((REPO / "agentd.toml").read_text())
    tables = {f for f in config_fields() if "." not in f}  # [daemon], [bus], ...: headers
    missing = sorted(config_fields() - shown - tables)
    assert not missing, f"agentd.toml does not show these keys (add each, commented): {missing}"


def test_writing_an_agent_shows_every_agent_toml_key() -> None:
    from agentd.config._agent_spec import AgentSpec

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Writing an agent", 1)[1].split("\n## ", 1)[0]
    shown = documented_keys(section.split("```toml", 1)[1].split("```", 1)[0])
    fields = config_fields(AgentSpec)
    missing = sorted(f for f in fields - shown if f not in {"replicas", "restart", "sandbox"})
    assert not missing, f"README's agent.toml example does not show: {missing}"


def test_a_key_missing_from_the_file_would_be_caught() -> None:
    text = (REPO / "agentd.toml").read_text()
    assert "gateway.max_attempts" in documented_keys(text)
    without = re.sub(r"(?m)^max_attempts = .*\n", "", text)
    assert "gateway.max_attempts" not in documented_keys(without)


def _docs_text() -> str:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    docs += sorted(REPO.glob("agentd/*/README.md")) + sorted(REPO.glob("deploy/*/README.md"))
    return "\n".join(p.read_text() for p in docs)


def cli_surface(parser: argparse.ArgumentParser, prefix: str) -> dict[str, set[str]]:
    """Each command path of a parser ('agentctl dlq list') and the option strings it takes
    itself (the global flags are listed under the program alone)."""
    surface: dict[str, set[str]] = {}
    top = {o for a in parser._actions for o in a.option_strings}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        shown = [a for a in p._actions if a.help != argparse.SUPPRESS]  # hidden: for tests
        options = {o for a in shown for o in a.option_strings if o.startswith("--")}
        own = options - top - {"--help"} if path != prefix else options - {"--help"}
        short = {o for a in shown for o in a.option_strings if re.fullmatch(r"-\w", o)}
        surface[path] = own | (short - {"-h"})
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(parser, prefix)
    return surface


def test_every_cli_verb_and_flag_is_documented() -> None:
    text = _docs_text()
    missing: list[str] = []
    for prog, parser in (("agentctl", agentctl._parser()), ("agentd", agentd._parser())):
        for path, options in cli_surface(parser, prog).items():
            words = path.split()[1:]
            if words and not re.search(r"\b" + r"\s+(\S+\s+)*?".join(map(re.escape, words)), text):
                missing.append(path)
            for option in sorted(options):
                if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                    missing.append(f"{path} {option}")
    assert not missing, f"documented nowhere in README.md, docs/ or a package README: {missing}"


def test_an_undocumented_flag_would_be_caught() -> None:
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    sub.add_parser("frobnicate").add_argument("--zorch-level")
    surface = cli_surface(parser, "x")
    assert surface == {"x": set(), "x frobnicate": {"--zorch-level"}}
    assert not re.search(r"--zorch-level", _docs_text())


def test_the_docs_cite_nothing_outside_the_repository() -> None:
    for path in [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("agentd/*/README.md")]:
        assert "shared/DESIGN.md" not in path.read_text(), path
        assert "../shared" not in Path(path).read_text(), path
