"""A plain local journal of decisions (JSON lines under the state directory).

Stands in for the durable, hash-chained decision log until that is wired in: every component
already reports its decisions through the same `record(dict)` call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["DecisionJournal"]

log = logging.getLogger("agentd.daemon")


class DecisionJournal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        entry.setdefault("ts", time.time())
        line = json.dumps(entry, default=str, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
