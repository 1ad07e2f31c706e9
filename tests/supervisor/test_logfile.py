"""Child output: line splitting, the last line, size-based log rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.supervisor import ChildEventKind, ChildSpec, RestartPolicy, RestartType, Supervisor
from agentd.supervisor._logfile import OutputCapture, RotatingLineWriter
from tests.supervisor.helpers import EventLog, child_argv


def _line(n: int) -> bytes:
    return f"line {n:04d} .........\n".encode()  # 20 bytes


def test_writer_rotates_by_size_and_keeps_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    writer = RotatingLineWriter(log, max_bytes=100, backups=2)
    for n in range(30):
        writer.write(_line(n))
    writer.close()
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["child.log", "child.log.1", "child.log.2"]
    contents = [(log.parent / name).read_bytes() for name in ("child.log.2", "child.log.1")]
    contents.append(log.read_bytes())
    assert all(0 < len(c) <= 100 for c in contents)
    # Oldest to newest, the kept files hold the last lines in order, none split.
    kept = b"".join(contents)
    assert kept == b"".join(_line(n) for n in range(30 - len(kept) // 20, 30))
    assert len(kept) == 300  # three files of 5 lines each


def test_writer_without_backups_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    writer = RotatingLineWriter(log, max_bytes=50, backups=0)
    for n in range(5):
        writer.write(_line(n))
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.log"]
    assert log.read_bytes() == _line(4)


def test_writer_appends_to_an_existing_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_bytes(b"x" * 90)
    writer = RotatingLineWriter(log, max_bytes=100, backups=1)
    writer.write(_line(0))  # 110 bytes would exceed the limit: the old content rotates
    writer.close()
    assert (tmp_path / "child.log.1").read_bytes() == b"x" * 90
    assert log.read_bytes() == _line(0)


def test_capture_splits_chunks_into_lines(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    capture = OutputCapture(RotatingLineWriter(log, max_bytes=1000, backups=1))
    capture.feed(b"first li")
    assert capture.last_line is None and not log.exists()  # nothing whole yet
    capture.feed(b"ne\nsecond\n\n  \nthi")
    assert capture.last_line == "second"  # blank lines do not count
    capture.feed(b"rd \xff\n")
    assert capture.last_line == "third \ufffd"
    capture.feed(b"no newline at the end")
    capture.close()
    assert capture.last_line == "no newline at the end"
    assert log.read_bytes() == b"first line\nsecond\n\n  \nthird \xff\nno newline at the end\n"


def test_capture_without_a_file_keeps_the_last_line() -> None:
    capture = OutputCapture(None)
    capture.feed(b"a\r\nb\r\n")
    assert capture.last_line == "b"
    capture.feed(b"x" * 70_000)  # past the partial-line limit: flushed as a line of its own
    assert capture.last_line == "x" * 1000


@pytest.mark.anyio
async def test_child_output_goes_to_a_rotated_log(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "worker.log"
    spec = ChildSpec(
        name="chatty",
        argv=child_argv("--lines", "300", "--line-width", "50", "--exit-after", "0"),
        restart=RestartPolicy(type=RestartType.TEMPORARY),
        log_path=log,
        log_max_bytes=2000,
        log_backups=3,
    )
    await supervisor.start(spec)
    await events.wait_for(ChildEventKind.EXIT, "chatty")
    names = sorted(p.name for p in log.parent.iterdir())
    assert names == ["worker.log", "worker.log.1", "worker.log.2", "worker.log.3"]
    kept = b"".join(
        (log.parent / name).read_bytes()
        for name in ("worker.log.3", "worker.log.2", "worker.log.1", "worker.log")
    )
    lines = kept.decode().splitlines()
    assert all(len(line) == 49 and line.startswith("line ") for line in lines)
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 300))
    assert all(len((log.parent / name).read_bytes()) <= 2000 for name in names)
    assert supervisor.info("chatty").last_line == lines[-1]


@pytest.mark.anyio
async def test_log_collects_every_restart(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    log = tmp_path / "child.log"
    spec = ChildSpec(
        name="again",
        argv=child_argv("--say", "hello", "--exit-after", "0", "--code", "1"),
        restart=RestartPolicy(max_restarts=1, backoff_initial_s=0.05, jitter=0),
        log_path=log,
    )
    await supervisor.start(spec)
    await events.wait_for(ChildEventKind.FAILED, "again")
    # Each process's unterminated last line is closed off when it exits.
    assert log.read_text() == "hello\nhello\n"
    exits = events.of(ChildEventKind.EXIT, "again")
    assert len(exits) == 2
    assert supervisor.info("again").last_line == "hello"
