"""Lookups the daemon's read verbs make on a decision-log file, each through one read-only
snapshot (`agentd.trace.open_reader`)."""

from __future__ import annotations

from pathlib import Path

from agentd.trace import DecisionRecord, open_reader

from ._runs import message_id_of

__all__ = ["run_of_message"]


def _like_literal(text: str) -> str:
    """`text` as a LIKE pattern that matches only itself (with `ESCAPE '\\'`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def run_of_message(path: Path, message_id: str) -> str | None:
    """The run that handled `message_id`: the newest `run.started` record naming it in its
    `inputs.message_id`, or None.

    The id is a literal, never a pattern: `%` and `_` in it match only themselves (a user's
    `agentctl trace %` must not show the newest run), and each candidate's message id is
    compared exactly before it counts.
    """
    sql = (
        "SELECT body FROM records WHERE kind = 'run.started' AND body LIKE ? ESCAPE '\\' "
        "ORDER BY seq DESC"
    )
    pattern = f'%"message_id":"{_like_literal(message_id)}"%'
    with open_reader(path) as conn:
        for (body,) in conn.execute(sql, (pattern,)):
            record = DecisionRecord.from_body(body)
            if message_id_of(record) == message_id:
                return record.run_id
    return None
