"""agentctl's auditor and operator views of the decision log: `audit verify|prove|export`,
`trace ID`, `trace --follow` and `runs`.

Everything asks the daemon (which holds the log and its key) except `audit verify --log PATH`,
which checks a copy of the file offline, with the daemon stopped or on another machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import anyio
from nats.aio.msg import Msg

from agentd.audit import parse_when, verify_log_file
from agentd.cli._client import ControlClient
from agentd.cli._log_args import AuditFailed, add_log_commands
from agentd.cli._trace_view import render_decision_line, render_runs, render_trace
from agentd.errors import ControlError
from agentd.trace import DecisionRecord, InclusionProof, verifier_source

__all__ = [
    "AuditFailed",
    "add_log_commands",
    "audit",
    "is_offline",
    "run_offline",
    "runs",
    "trace",
]


VERIFY_WAIT_S = 600.0


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise ControlError("bad_request", str(exc)) from None


# -- audit verify ----------------------------------------------------------------------------


def _verify_text(report: dict[str, Any]) -> str:
    if report["ok"]:
        text = f"OK: {report['reason']} (signed through record {report['signed_through']})"
        if report["signed_through"] == 0 and report["checked"]:
            text += "\nno checkpoint is signed yet: the hash chain alone protects these records"
        if report.get("witnessed_through"):
            text += "\nchecked against checkpoints published outside the log through record"
            text += f" {report['witnessed_through']}"
        elif report.get("anchored") is False:
            text += "\nwarning: [trace].anchor is off: nothing outside the log vouches for it"
        return text
    where = ""
    if report.get("first_bad_seq") is not None:
        where = f" at record {report['first_bad_seq']}"
        if report.get("first_bad_id"):
            where += f" (id {report['first_bad_id']})"
    elif report.get("bad_checkpoint") is not None:
        where = f" at the checkpoint of tree size {report['bad_checkpoint']}"
    return f"FAILED{where}: {report['reason']}"


def _finish_verify(report: dict[str, Any], as_json: bool) -> str | None:
    text = _verify_text(report)
    if as_json:
        print(json.dumps(report, indent=2))
    if not report["ok"]:
        raise AuditFailed(f"verification {text}")
    return None if as_json else text


def is_offline(args: argparse.Namespace) -> bool:
    """Commands that run without a daemon: `audit verify --log PATH`."""
    return args.command == "audit" and args.audit_command == "verify" and args.log is not None


def run_offline(args: argparse.Namespace) -> str | None:
    report, key_file = verify_log_file(
        args.log, args.key, from_seq=args.from_seq, to_seq=args.to_seq, witness=args.witness
    )
    result = {**report.to_dict(), "log": str(args.log), "public_key_file": str(key_file)}
    text = _finish_verify(result, args.json)
    if text is not None and args.key is None:
        text += f"\nwarning: checked against {key_file}, found beside the log; pin a copy (--key)"
    if text is not None and not args.witness:
        text += (
            "\nwarning: no witness given (--witness): a record rewritten with the chain"
            " recomputed and the checkpoints after it deleted would verify"
        )
    return text


# -- audit (through the daemon) --------------------------------------------------------------


async def audit(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.audit_command == "verify":
        if args.witness:
            raise ControlError(
                "bad_request",
                "--witness goes with --log (offline); the daemon checks its own anchor and the"
                " witnesses [trace.witness] configures",
            )
        request = {k: v for k in ("from_seq", "to_seq") if (v := getattr(args, k)) is not None}
        # a whole log takes a while (about a minute per million records here): wait for it
        report = await ctl.call("audit.verify", request, timeout_s=max(args.timeout, VERIFY_WAIT_S))
        return _finish_verify(report, args.json)
    if args.audit_command == "prove":
        return await _prove(ctl, args)
    return await _export(ctl, args)


async def _prove(ctl: ControlClient, args: argparse.Namespace) -> Any:
    result = await ctl.call("audit.prove", {"id": args.id})
    proof = InclusionProof.model_validate(result["proof"])
    # check it here too: a proof the daemon hands out that does not verify is a finding
    verdict = proof.verify()
    if not verdict.ok:
        raise AuditFailed(f"the daemon's proof of {args.id} does not verify: {verdict.reason}")
    if args.verifier_out is not None:
        args.verifier_out.write_text(verifier_source(), encoding="utf-8")
    if args.out is None:
        print(proof.to_json())
        out: TextIO = sys.stderr
        proof_name = "proof.json"
    else:
        args.out.write_text(proof.to_json() + "\n", encoding="utf-8")
        out, proof_name = sys.stdout, str(args.out)
    key_file = result["public_key_file"]
    verifier = (
        f"python {args.verifier_out}" if args.verifier_out else "python -m agentd.trace.verifier"
    )
    lines = [
        f"{verdict.reason} (checked here).",
        "Verify it anywhere with Python and the `cryptography` package:",
        f"  {verifier} {proof_name} --public-key {key_file}",
    ]
    if args.verifier_out is None:
        lines.append(
            "  (without agentd installed: add --verifier-out verifier.py and run that one file)"
        )
    lines.append(
        f"Pin the key (id {result['key_id']}) from a copy kept off this host, not the one here."
    )
    print("\n".join(lines), file=out)
    return None


async def _export(ctl: ControlClient, args: argparse.Namespace) -> Any:
    request: dict[str, Any] = {}
    for name in ("since", "until"):
        value = _when(getattr(args, name))
        if value is not None:
            request[name] = value
    if args.page_bytes:
        request["page_bytes"] = args.page_bytes
    target = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    count = pages = 0
    try:
        after = 0
        while True:
            page = await ctl.call("audit.export", {**request, "after_seq": after})
            for line in page["lines"]:
                target.write(line + "\n")
            count += len(page["lines"])
            pages += 1
            if page["next_after"] is None:
                break
            after = int(page["next_after"])
    finally:
        if args.out:
            target.close()
        else:
            target.flush()
    where = str(args.out) if args.out else "stdout"
    print(f"exported {count} records to {where} in {pages} pages", file=sys.stderr)
    return None


# -- trace and runs --------------------------------------------------------------------------


async def trace(ctl: ControlClient, args: argparse.Namespace) -> Any:
    if args.follow:
        await _follow(ctl, args.agent, args.count, as_json=args.json)
        return None
    if not args.id:
        raise ControlError("bad_request", "give an id (run, trace or conversation) or --follow")
    result = await ctl.call("trace", {"id": args.id, "limit": args.limit})
    return result if args.json else render_trace(result)


async def _follow(
    ctl: ControlClient, agent: str | None, count: int | None, *, as_json: bool
) -> None:
    done = anyio.Event()
    seen = 0

    async def on_decision(msg: Msg) -> None:
        nonlocal seen
        if count is not None and seen >= count:
            return
        try:
            body = json.loads(msg.data)
            record = DecisionRecord.model_validate(body)
        except ValueError:
            return
        if agent is not None and record.agent != agent:
            return
        if as_json:
            print(json.dumps(body, separators=(",", ":")), flush=True)
        else:
            print(render_decision_line(record), flush=True)
        seen += 1
        if count is not None and seen >= count:
            done.set()

    subject = ctl.subjects.event("decision")
    sub = await ctl.nc.subscribe(subject, cb=on_decision)
    await ctl.nc.flush()  # the subscription is in place at the server before we say so
    who = f" of {agent}" if agent else ""
    print(f"following decisions{who} on {subject} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        await done.wait()
    finally:
        await sub.unsubscribe()


async def runs(ctl: ControlClient, args: argparse.Namespace) -> Any:
    request: dict[str, Any] = {"limit": args.limit, "since": _when(args.since or "24h")}
    if args.agent:
        request["agent"] = args.agent
    if args.status:
        request["status"] = args.status
    for hidden in ("page_bytes", "scan_records"):  # tests: small pages, short scans
        if getattr(args, hidden, None):
            request[hidden] = getattr(args, hidden)
    # page by page: 2,500 runs are more than one NATS message holds
    rows: list[Any] = []
    offset: int | None = 0
    complete = True
    while offset is not None:
        page = await ctl.call(
            "runs", {**request, "offset": offset}, timeout_s=max(ctl.timeout_s, 60.0)
        )
        if isinstance(page, list):  # a daemon from before pages: one answer
            rows, offset = page, None
            break
        rows.extend(page["runs"])
        offset, complete = page["next_offset"], page.get("complete", True)
    if not complete:
        print(
            f"agentctl: fewer than {args.limit} matching runs in the newest records the daemon "
            "reads back for a filter; narrow it with --agent or --since",
            file=sys.stderr,
        )
    return rows if args.json else render_runs(rows)
