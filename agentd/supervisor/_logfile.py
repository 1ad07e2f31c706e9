"""A child's output: split into lines, written to a size-rotated file, last line kept."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["OutputCapture", "RotatingLineWriter"]

logger = logging.getLogger("agentd.supervisor")

# A child printing without newlines must not grow our buffer without bound.
_MAX_PARTIAL_BYTES = 64 * 1024
_MAX_LAST_LINE_CHARS = 1000


class RotatingLineWriter:
    """Appends whole lines to `path`; past `max_bytes` it rotates to path.1 ... path.N.

    Rotation happens only between lines, so a line is never split across two files; a single
    line longer than `max_bytes` gets a file of its own.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backups
        self._file: BinaryIO | None = None
        self._size = 0

    @property
    def path(self) -> Path:
        """The current log file."""
        return self._path

    def write(self, data: bytes) -> None:
        """Append `data` (whole lines) and flush, so `tail -f` sees it at once."""
        if not data:
            return
        if self._file is None:
            self._open()
        if self._size + len(data) <= self._max_bytes:
            self._append(data)
            return
        # Past the limit: fill the current file line by line, rotating at line boundaries.
        batch: list[bytes] = []
        batch_size = 0
        for line in data.splitlines(keepends=True):
            filled = self._size + batch_size
            if filled and filled + len(line) > self._max_bytes:
                self._append(b"".join(batch))
                batch, batch_size = [], 0
                self._rotate()
            batch.append(line)
            batch_size += len(line)
        self._append(b"".join(batch))

    def _append(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def close(self) -> None:
        """Close the file; a later write reopens it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._path.open("ab")
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self.close()
        if self._backups == 0:
            self._path.unlink(missing_ok=True)
        else:
            for n in range(self._backups - 1, 0, -1):
                older = self._numbered(n)
                if older.exists():
                    os.replace(older, self._numbered(n + 1))
            if self._path.exists():
                os.replace(self._path, self._numbered(1))
        self._open()

    def _numbered(self, n: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{n}")


class OutputCapture:
    """Receives raw output chunks; keeps the last line and writes whole lines to a writer."""

    def __init__(self, writer: RotatingLineWriter | None) -> None:
        self._writer = writer
        self._partial = b""
        self.last_line: str | None = None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk read from the child's pipe."""
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        complete, self._partial = data[:cut], data[cut:]
        if len(self._partial) > _MAX_PARTIAL_BYTES:
            complete, self._partial = data + b"\n", b""
        if complete:
            self._remember_last(complete)
            self._write(complete)

    def flush(self) -> None:
        """The pipe closed: a last line without a newline still counts."""
        if self._partial:
            data, self._partial = self._partial + b"\n", b""
            self._remember_last(data)
            self._write(data)

    def close(self) -> None:
        """Flush and close the log file."""
        self.flush()
        if self._writer is not None:
            self._writer.close()

    def _remember_last(self, complete: bytes) -> None:
        for raw in reversed(complete.splitlines()):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.last_line = line[:_MAX_LAST_LINE_CHARS]
                return

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write(data)
        except OSError as exc:
            # A full disk must not take the child down with it; the lines are lost, not the child.
            logger.error("cannot write child log %s: %s", self._writer.path, exc)
            self._writer.close()
