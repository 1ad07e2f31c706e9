"""Reading the decision log for auditors and operators.

Everything here reads: through read-only SQLite connections (the daemon's writer is never held
up) and from plain records, so the daemon's verbs run it in a worker thread and `agentctl audit
verify --log` runs it on a copy of the file with no daemon at all. `export_page` streams a range
in pages; `derive_runs` lists runs from `run.*` records or from routed messages and the run
ledger; `build_trace_tree` arranges a run's, trace's or conversation's decisions into a tree.
"""

from agentd.trace import open_reader

from ._export import ExportPage, export_page
from ._offline import verify_log_file
from ._reader import run_of_message
from ._runs import RUN_STATUSES, RunSummary, derive_runs, message_id_of
from ._time import parse_when
from ._tree import TraceNode, build_trace_tree, token_counts

__all__ = [
    # verification and export
    "ExportPage",
    "export_page",
    "open_reader",
    "run_of_message",
    "verify_log_file",
    # runs
    "RUN_STATUSES",
    "RunSummary",
    "derive_runs",
    "message_id_of",
    # trees
    "TraceNode",
    "build_trace_tree",
    "token_counts",
    # time
    "parse_when",
]
