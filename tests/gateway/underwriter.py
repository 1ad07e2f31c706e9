"""The example underwriter's graph, imported from agents/underwriter as its worker would."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENT_DIR = Path(__file__).resolve().parents[2] / "agents" / "underwriter"
if str(AGENT_DIR) not in sys.path:
    sys.path.insert(0, str(AGENT_DIR))

import rationale_drafter  # noqa: E402
import underwriter_graph  # noqa: E402

APPLICATION = {
    "application_id": "A-1001",
    "applicant": "Ada Lovelace",
    "amount": 12000,
    "income": 60000,
    "monthly_debt": 300,
    "term_months": 36,
}


@dataclass
class Context:
    """The part of AgentContext the underwriter reads."""

    run_id: str | None = "run-1"
    params: dict[str, Any] = field(default_factory=dict)


__all__ = ["APPLICATION", "Context", "rationale_drafter", "underwriter_graph"]
