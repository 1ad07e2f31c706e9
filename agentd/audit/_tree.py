"""The tree of decisions behind `agentctl trace ID`.

Records are arranged by what they carry:

- records with a `span_id` are grouped into one node per span (a tool call's steps share its
  span), under the node of their `parent_span_id` when that span is in the set;
- a span without a known parent, and a record without a span, go under the node of their
  `run_id` (one node per run), and runs and the rest at the top, in time order.

So the tree is the span tree once OpenTelemetry ids are filled in, and a conversation -> run ->
decision outline before. Children are ordered by their first record's time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agentd.trace import DecisionRecord

__all__ = ["TraceNode", "build_trace_tree", "token_counts"]

_TOKEN_KEYS = (
    ("tokens_in", "tokens_out"),
    ("input_tokens", "output_tokens"),
    ("prompt_tokens", "completion_tokens"),
    ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
)


@dataclass(slots=True)
class TraceNode:
    """A run, a span or the whole trace; `records` are its own decisions, oldest first."""

    kind: str
    """"root", "run" or "span"."""
    key: str
    records: list[DecisionRecord] = field(default_factory=list)
    children: list[TraceNode] = field(default_factory=list)

    @property
    def start(self) -> float:
        times = [r.ts for r in self.records] + [c.start for c in self.children]
        return min(times) if times else 0.0

    @property
    def end(self) -> float:
        times = [r.ts for r in self.records] + [c.end for c in self.children]
        return max(times) if times else 0.0

    def walk(self) -> Iterable[DecisionRecord]:
        yield from self.records
        for child in self.children:
            yield from child.walk()


def token_counts(record: DecisionRecord) -> tuple[int, int] | None:
    """(input, output) tokens of an LLM call, from whichever attribute names it uses."""
    attributes = record.attributes or {}
    for key_in, key_out in _TOKEN_KEYS:
        tokens_in, tokens_out = attributes.get(key_in), attributes.get(key_out)
        if isinstance(tokens_in, int) or isinstance(tokens_out, int):
            return (
                tokens_in if isinstance(tokens_in, int) else 0,
                tokens_out if isinstance(tokens_out, int) else 0,
            )
    return None


def build_trace_tree(key: str, records: Iterable[DecisionRecord]) -> TraceNode:
    """Arrange `records` (any order) into a tree whose root is named `key`."""
    ordered = sorted(records, key=lambda r: r.ts)
    root = TraceNode("root", key)
    runs: dict[str, TraceNode] = {}
    spans: dict[str, TraceNode] = {}
    span_parent: dict[str, str | None] = {}
    span_run: dict[str, str | None] = {}
    for record in ordered:
        if record.span_id is not None:
            node = spans.get(record.span_id)
            if node is None:
                node = spans[record.span_id] = TraceNode("span", record.span_id)
                span_parent[record.span_id] = record.parent_span_id
                span_run[record.span_id] = record.run_id
            node.records.append(record)
            span_parent[record.span_id] = span_parent[record.span_id] or record.parent_span_id
            span_run[record.span_id] = span_run[record.span_id] or record.run_id
        elif record.run_id is not None:
            _run_node(runs, record.run_id).records.append(record)
        else:
            root.records.append(record)
    for span_id, node in spans.items():
        parent_id = span_parent[span_id]
        run_id = span_run[span_id]
        if parent_id is not None and parent_id in spans and parent_id != span_id:
            spans[parent_id].children.append(node)
        elif run_id is not None:
            _run_node(runs, run_id).children.append(node)
        else:
            root.children.append(node)
    root.children.extend(runs.values())
    _sort(root)
    return root


def _run_node(runs: dict[str, TraceNode], run_id: str) -> TraceNode:
    node = runs.get(run_id)
    if node is None:
        node = runs[run_id] = TraceNode("run", run_id)
    return node


def _sort(node: TraceNode) -> None:
    node.children.sort(key=lambda c: c.start)
    for child in node.children:
        _sort(child)
