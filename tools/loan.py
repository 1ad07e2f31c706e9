"""Example tools of the loan flow: a credit score and the loan approval that moves money.

`loan.approve` has a real side effect: it appends a line to a ledger file
($AGENTD_LOAN_LEDGER, else <state dir>/tools/loan-ledger.jsonl with the state dir from
$AGENTD_STATE_DIR, else .agentd). The tool gateway runs it at most once per call (idempotency
key) and only within policy: payees on the allowlist, amounts up to the cap, approval above
10,000 (policies/constraints.toml).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated

from pydantic import Field

from agentd.tools import tool

_ledger_lock = threading.Lock()


def _tools_dir() -> Path:
    return Path(os.environ.get("AGENTD_STATE_DIR") or ".agentd") / "tools"


def ledger_path() -> Path:
    """Where approved loans are written."""
    return Path(os.environ.get("AGENTD_LOAN_LEDGER") or _tools_dir() / "loan-ledger.jsonl")


@tool("credit.score")
def credit_score(
    applicant_id: Annotated[str, Field(description="applicant id, e.g. A-1001", max_length=64)],
) -> dict[str, object]:
    """The applicant's credit score (300-850) and band; deterministic for an id."""
    digest = hashlib.sha256(applicant_id.encode()).digest()
    score = 300 + int.from_bytes(digest[:4], "big") % 551
    band = (
        "excellent"
        if score >= 750
        else "good"
        if score >= 670
        else "fair"
        if score >= 580
        else "poor"
    )
    return {"applicant_id": applicant_id, "score": score, "band": band}


@tool("loan.approve")
def loan_approve(
    applicant_id: Annotated[str, Field(description="applicant id, e.g. A-1001", max_length=64)],
    amount: Annotated[float, Field(description="amount to pay out")],
    payee: Annotated[str, Field(description="account the money goes to", max_length=64)],
) -> dict[str, object]:
    """Approve a loan and pay it out to `payee`: appends it to the loan ledger."""
    entry = {"applicant_id": applicant_id, "amount": amount, "payee": payee, "at": time.time()}
    entry["confirmation"] = "LN-" + hashlib.sha256(json.dumps(entry).encode()).hexdigest()[:10]
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _ledger_lock, path.open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(entry) + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return {"status": "approved", "confirmation": entry["confirmation"], "amount": amount}
