"""Decision records and the durable, tamper-evident decision log.

Every component describes what it decided as a `DecisionRecord`; a `Redactor` removes configured
secrets and replaces large payloads by digests; the `DecisionLog` stores records append-only in
SQLite, hash-chained, under signed RFC 6962 Merkle checkpoints, and answers the auditors'
questions: `verify`, `prove`, `export`. Workers publish their records with a `TracePublisher`
to `<prefix>.trace.<agent>`; the daemon's `TraceIngest` writes them through the `LogWriter`, the
log's one writer, which its own `Recorder` shares; an agent may write only its runs and `x.*`
records, and every record says its `source` (`_sources`). The log is anchored outside its file
(`_anchor`, `_witness`): each signed checkpoint is published with an RFC 6962 consistency proof
to the daemon's JetStream and to witnesses, the writer refuses to extend a file that does not
give the last one, and `verify` checks the file against them. `agentd.trace.verifier` checks a
proof or a witness file with nothing but the standard library and `cryptography`.
"""

from ._anchor import WitnessEntry, check_witness_chain
from ._config import DecisionLogConfig, apply_retention, open_decision_log
from ._errors import DecisionLogDamaged, DecisionLogError
from ._ingest import TraceIngest
from ._keys import load_or_create_signing_key, public_key_path, read_public_key
from ._log import AppendResult, DecisionLog
from ._log_writer import CommitObserver, LogWriter
from ._proof import InclusionProof, verifier_source
from ._publisher import TracePublisher, build_record
from ._query import LoggedRecord, export_lines, open_reader
from ._record import (
    LEGACY_KINDS,
    RECORD_KINDS,
    DecisionRecord,
    Lineage,
    current_kind,
    new_record_id,
)
from ._redact import REDACTED, Redactor, context_free
from ._retention import PruneResult
from ._schema import Checkpoint
from ._sources import AGENT_KINDS, DAEMON_SOURCE, agent_may_write, agent_source
from ._verify import VerifyReport, verify_log
from ._wire import RecordRejected, WireRecord, check_wire_record, parse_published
from ._witness import AnchorStore, FileWitness, StreamWitness, Witness, read_witness_file
from .verifier import ProofVerdict, verify_consistency, verify_inclusion

__all__ = [
    # records
    "LEGACY_KINDS",
    "RECORD_KINDS",
    "current_kind",
    "DecisionRecord",
    "Lineage",
    "build_record",
    "new_record_id",
    # who may write what
    "AGENT_KINDS",
    "DAEMON_SOURCE",
    "agent_may_write",
    "agent_source",
    # the durable path from workers: publish, check, ingest, write
    "CommitObserver",
    "LogWriter",
    "RecordRejected",
    "TraceIngest",
    "TracePublisher",
    "WireRecord",
    "check_wire_record",
    "parse_published",
    # redaction
    "REDACTED",
    "Redactor",
    "context_free",
    # the log
    "AppendResult",
    "DecisionLogConfig",
    "apply_retention",
    "open_decision_log",
    "Checkpoint",
    "DecisionLog",
    "LoggedRecord",
    "PruneResult",
    # reading and auditing
    "export_lines",
    "open_reader",
    "InclusionProof",
    "ProofVerdict",
    "VerifyReport",
    "verifier_source",
    "verify_inclusion",
    "verify_log",
    "verify_consistency",
    # the anchor outside the file, and the witnesses
    "AnchorStore",
    "FileWitness",
    "StreamWitness",
    "Witness",
    "WitnessEntry",
    "check_witness_chain",
    "read_witness_file",
    # keys
    "load_or_create_signing_key",
    "public_key_path",
    "read_public_key",
    # errors
    "DecisionLogDamaged",
    "DecisionLogError",
]
