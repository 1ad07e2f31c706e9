"""Every record kind the daemon writes is documented in docs/audit.md ("Record kinds"), with its
fields; the daemon writes no extension (`x.*`) kinds of its own; logs written under the old
names stay readable and verifiable."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from agentd.daemon._child_events import CHILD_EVENT_KINDS
from agentd.router._router import _KINDS as ROUTER_KINDS
from agentd.supervisor import ChildEventKind
from agentd.trace import (
    LEGACY_KINDS,
    RECORD_KINDS,
    DecisionLog,
    DecisionRecord,
    current_kind,
    open_reader,
)
from tests.harness import REPO

AUDIT_MD = REPO / "docs" / "audit.md"
_ROW = re.compile(r"^\| `([a-z0-9_.]+)` \|(.*)\|\s*$")
_KIND = re.compile(r"^[a-z]+(\.[a-z0-9_]+)+$")


def documented() -> dict[str, list[str]]:
    """The kinds of the "Record kinds" table and the cells of their rows."""
    text = AUDIT_MD.read_text()
    section = text.split("\n## Record kinds\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("**Renamed kinds.**", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        match = _ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def written_kinds() -> tuple[dict[str, list[str]], list[str]]:
    """Kinds given as literals to a record-writing call in agentd/ (`record`, `_record`,
    `build_record`, ...: the first argument, or `kind=`), and calls whose kind is not a literal
    or a name (an f-string or other expression: a kind made up at run time)."""
    kinds: dict[str, list[str]] = {}
    computed: list[str] = []
    for path in sorted((REPO / "agentd").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            # `kind=` passes a kind on (`revoke(name, kind="agent.lease_expired")`) when it
            # looks like one; other `kind=` arguments (a tool's kind) are not record kinds
            candidates = [
                kw.value
                for kw in node.keywords
                if kw.arg == "kind"
                and not (
                    isinstance(kw.value, ast.Constant) and not _KIND.match(str(kw.value.value))
                )
            ]
            if _name(node.func).endswith("record") and node.args:
                candidates.append(node.args[0])
            for arg in candidates:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    kinds.setdefault(arg.value, []).append(where)
                elif isinstance(arg, ast.JoinedStr | ast.BinOp):
                    computed.append(f"{where}: {ast.unparse(arg)}")
    return kinds, computed


def test_every_kind_in_record_kinds_is_documented_with_its_fields() -> None:
    rows = documented()
    missing = sorted(RECORD_KINDS - set(rows))
    assert not missing, f"docs/audit.md 'Record kinds' lacks {missing}"
    stale = sorted(set(rows) - RECORD_KINDS)
    assert not stale, f"docs/audit.md documents kinds no code knows: {stale}"
    for kind, cells in rows.items():
        assert len(cells) == 3 and cells[0] and cells[2], f"{kind}: who writes it and its fields"


def test_every_kind_written_in_the_code_is_a_documented_record_kind() -> None:
    kinds, computed = written_kinds()
    assert {"llm.call", "tool.executed", "message.dead_lettered", "config.reloaded"} <= set(kinds)
    assert not computed, f"record kinds must be literals (a table entry), not made up: {computed}"
    rows = documented()
    for kind, where in kinds.items():
        assert kind in RECORD_KINDS, f"{kind} ({where}) is not in RECORD_KINDS"
        assert kind in rows, f"{kind} ({where}) is not documented in docs/audit.md"
    # kinds chosen through a table: every entry is a documented kind
    assert set(CHILD_EVENT_KINDS) == set(ChildEventKind), "a supervisor event has no kind"
    for kind in (*CHILD_EVENT_KINDS.values(), *ROUTER_KINDS.values(), *LEGACY_KINDS.values()):
        assert kind in RECORD_KINDS and kind in rows, kind


def test_old_extension_kinds_still_read_verify_and_map_to_their_names(tmp_path: Path) -> None:
    path = tmp_path / "decisions.db"
    with DecisionLog(path, signing_key_path=tmp_path / "key") as log:
        old = [DecisionRecord(kind=kind, decision="ready") for kind in LEGACY_KINDS]
        log.append_batch([*old, DecisionRecord(kind="agent.ready", decision="ready")])
        log.checkpoint()
        assert log.verify().ok
    with open_reader(path) as conn:
        bodies = conn.execute("SELECT body FROM records ORDER BY seq").fetchall()
    stored = [DecisionRecord.from_body(body).kind for (body,) in bodies]
    assert stored == [*LEGACY_KINDS, "agent.ready"]
    assert [current_kind(k) for k in stored] == [*LEGACY_KINDS.values(), "agent.ready"]
