"""A configurable child process for the supervisor tests (stdlib only, started by path)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit-after", type=float, help="exit after this many seconds")
    parser.add_argument("--code", type=int, default=0, help="exit code for --exit-after")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    parser.add_argument("--heartbeat", type=Path, help="touch this file every 50 ms")
    parser.add_argument("--grandchild", type=Path, help="spawn a grandchild, write its pid here")
    parser.add_argument("--lines", type=int, default=0, help="print this many numbered lines")
    parser.add_argument("--line-width", type=int, default=20)
    parser.add_argument("--ready-file", type=Path, help="create this file once set up")
    parser.add_argument("--say", help="print this line (no newline) once set up")
    parser.add_argument("--term-touch", type=Path, help="on SIGTERM create this file, live on")
    parser.add_argument("--exit-on-file", type=Path, help="exit 0 once this file exists")
    args = parser.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.term_touch is not None:
        touch = args.term_touch
        signal.signal(signal.SIGTERM, lambda signum, frame: touch.touch())
    if args.grandchild is not None:
        grandchild = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            stdin=subprocess.DEVNULL,
        )
        _write_atomically(args.grandchild, str(grandchild.pid))
    if args.heartbeat is not None:
        threading.Thread(target=_beat, args=(args.heartbeat,), daemon=True).start()
    for n in range(args.lines):
        print(f"line {n:06d} ".ljust(args.line_width - 1, "x"))
    if args.say is not None:
        print(args.say, end="")
    sys.stdout.flush()
    if args.ready_file is not None:
        _write_atomically(args.ready_file, str(os.getpid()))
    if args.exit_after is not None:
        time.sleep(args.exit_after)
        sys.exit(args.code)
    if args.exit_on_file is not None:
        while not args.exit_on_file.exists():
            time.sleep(0.01)
        sys.exit(0)
    while True:
        signal.pause()


def _beat(path: Path) -> None:
    while True:
        path.touch()
        time.sleep(0.05)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
