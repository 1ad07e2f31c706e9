"""Inclusion proofs: verified by the standalone verifier, refused after tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentd.trace import (
    DecisionLogError,
    InclusionProof,
    public_key_path,
    verifier_source,
    verify_inclusion,
)
from agentd.trace.verifier import leaf_hash

from .conftest import LogFactory, make_record, tamper
from .test_merkle import naive_path

VERIFIER = Path(__file__).resolve().parents[2] / "agentd" / "trace" / "verifier.py"


def test_every_leaf_proves_against_every_checkpoint(open_log: LogFactory) -> None:
    """checkpoint_every=1 signs every tree size, so this covers all (leaf, size) pairs."""
    log = open_log(checkpoint_every=1)
    records = [make_record(i) for i in range(24)]
    for record in records:
        log.append(record)
    leaves = [leaf_hash(r.body_json().encode()) for r in records]
    for size in range(1, len(records) + 1):
        for index in range(size):
            proof = log.prove(records[index].id, tree_size=size)
            assert (proof.leaf_index, proof.tree_size) == (index, size)
            assert [bytes.fromhex(h) for h in proof.audit_path] == naive_path(index, leaves[:size])
            verdict = verify_inclusion(proof.to_json(), None, log.public_key)
            assert verdict.ok, verdict.reason
            assert verdict.key_pinned


def test_proof_round_trips_through_json(open_log: LogFactory) -> None:
    log = open_log()
    log.append_batch([make_record(i) for i in range(100)])
    proof = log.prove("rec-000042")  # signs a checkpoint: none covers it yet
    assert proof.tree_size == 100
    again = InclusionProof.from_json(proof.to_json())
    assert again == proof
    assert again.verify(log.public_key).ok
    assert json.loads(again.record)["id"] == "rec-000042"


def test_unknown_record_cannot_be_proved(open_log: LogFactory) -> None:
    log = open_log()
    log.append(make_record(1))
    with pytest.raises(DecisionLogError, match="no record"):
        log.prove("rec-999999")
    with pytest.raises(DecisionLogError, match="no checkpoint at tree size 7"):
        log.prove("rec-000001", tree_size=7)


def _proof(open_log: LogFactory) -> tuple[dict[str, object], bytes]:
    log = open_log(checkpoint_every=16)
    log.append_batch([make_record(i) for i in range(50)])
    proof = log.prove("rec-000013")
    return json.loads(proof.to_json()), log.public_key.public_bytes_raw()


def _edit_record(p: dict[str, object]) -> None:
    p["record"] = str(p["record"]).replace("needle-00013", "needle-00099")


def _edit_path(p: dict[str, object]) -> None:
    path = list(p["audit_path"])  # type: ignore[call-overload]
    path[1] = "00" * 32
    p["audit_path"] = path


def _edit_index(p: dict[str, object]) -> None:
    p["leaf_index"] = 12


def _edit_root(p: dict[str, object]) -> None:
    p["checkpoint"]["root"] = "11" * 32  # type: ignore[index]


def _edit_size(p: dict[str, object]) -> None:
    p["tree_size"] = 49
    p["checkpoint"]["tree_size"] = 49  # type: ignore[index]


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_edit_record, "do not give the signed root"),
        (_edit_path, "do not give the signed root"),
        (_edit_index, "do not give the signed root"),
        (_edit_root, "signature does not verify"),
        (_edit_size, "signature does not verify"),
    ],
)
def test_tampered_proof_fails(open_log: LogFactory, edit: object, why: str) -> None:
    proof, raw_key = _proof(open_log)
    assert verify_inclusion(proof, None, raw_key.hex()).ok
    edit(proof)  # type: ignore[operator]
    verdict = verify_inclusion(proof, None, raw_key.hex())
    assert not verdict.ok
    assert why in verdict.reason


def test_proof_signed_by_another_key_fails_against_the_pinned_key(open_log: LogFactory) -> None:
    proof, raw_key = _proof(open_log)
    other = Ed25519PrivateKey.generate().public_key()
    assert not verify_inclusion(proof, None, other).ok
    unpinned = verify_inclusion(proof)
    assert unpinned.ok and not unpinned.key_pinned


def test_a_different_copy_of_the_record_fails(open_log: LogFactory) -> None:
    proof, raw_key = _proof(open_log)
    body = str(proof["record"])
    assert verify_inclusion(proof, body, raw_key.hex()).ok
    respaced = json.dumps(json.loads(body), indent=1)
    assert not verify_inclusion(proof, respaced, raw_key.hex()).ok


def test_proving_a_record_changed_in_the_file_fails(open_log: LogFactory, state_dir: Path) -> None:
    """The log refuses to prove a record whose body no longer gives the signed root."""
    log = open_log(checkpoint_every=10)
    log.append_batch([make_record(i) for i in range(30)])
    log.close()
    tamper(
        state_dir / "decisions.db",
        "UPDATE records SET body = replace(body, 'needle', 'haystk') WHERE seq = 5",
    )
    reopened = open_log(checkpoint_every=10)
    with pytest.raises(DecisionLogError):
        reopened.prove("rec-000004")


def _run_verifier(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_standalone_verifier_needs_only_stdlib_and_cryptography(
    open_log: LogFactory, state_dir: Path, tmp_path: Path
) -> None:
    log = open_log()
    log.append_batch([make_record(i) for i in range(10)])
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(log.prove("rec-000003").to_json())
    pub = public_key_path(state_dir / "decision-log.key")
    copy = tmp_path / "verifier.py"
    copy.write_text(verifier_source())
    # -I: no PYTHONPATH, no script directory on sys.path. The script reports any agentd or
    # pydantic module that got imported.
    check = (
        "import runpy, sys\n"
        f"sys.argv = ['verifier.py', {str(proof_file)!r}, '--public-key', {str(pub)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(copy)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('agentd', 'pydantic'))\n"
        "print('LEAKED', leaked)\n"
        "sys.exit(code)\n"
    )
    ok = _run_verifier(["-I", "-c", check], cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: record rec-000003 is leaf 3 of the tree of size 10" in ok.stdout
    assert "LEAKED []" in ok.stdout

    proof_file.write_text(proof_file.read_text().replace("needle-00003", "needle-00004"))
    bad = _run_verifier(["-I", str(copy), str(proof_file), "--public-key", str(pub)], cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAILED:")


def test_verifier_runs_as_a_module(open_log: LogFactory, state_dir: Path, tmp_path: Path) -> None:
    log = open_log()
    log.append_batch([make_record(i) for i in range(3)])
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(log.prove("rec-000001").to_json())
    env = {**os.environ, "PYTHONPATH": str(VERIFIER.parents[2])}
    result = _run_verifier(["-m", "agentd.trace.verifier", str(proof_file)], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "warning: the signer's key was taken from the proof itself" in result.stdout
    missing = _run_verifier(
        ["-m", "agentd.trace.verifier", str(tmp_path / "nope.json")], cwd=tmp_path, env=env
    )
    assert missing.returncode == 2
