"""Start a stdio MCP server with its stdin and stdout on a Unix socket only the daemon reaches.

    python -I -S _mcp_launch.py SOCKET -- COMMAND ARGS...

SOCKET is a path, or `@name` in Linux's abstract namespace (what the daemon uses: no path
length limit, no file in a folder the sandbox must grant; the peer check below decides who
may connect).

Run by the supervisor (under the sandbox's exec wrapper): it binds SOCKET, accepts one
connection from its parent (the daemon; SO_PEERCRED must name that pid: any other process is
turned away), puts the connection on fds 0 and 1 and execs COMMAND. So the supervised process
*is* the server (no relay in between), its stderr goes to the supervisor's log, and when it
dies the daemon's end of the socket reads end of file. Standard library only.
"""

import contextlib
import os
import shutil
import socket
import struct
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: _mcp_launch.py SOCKET -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    path, program = argv[1], argv[3:]
    found = shutil.which(program[0])
    if found is None:
        print(f"agentd mcp: command {program[0]!r} not found (PATH or path)", file=sys.stderr)
        return 127
    daemon = os.getppid()
    abstract = path.startswith("@")  # Linux's abstract namespace: no file to leave behind
    if not abstract:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + path[1:] if abstract else path)
    if not abstract:
        os.chmod(path, 0o600)
    listener.listen(4)
    while True:
        conn, _ = listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        if pid == daemon:
            break
        print(f"agentd mcp: turned away a connection from pid {pid}", file=sys.stderr)
        conn.close()
    listener.close()
    if not abstract:  # a restarted server binds anew: the daemon never finds a stale socket
        os.unlink(path)
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    conn.close()
    try:
        os.execv(found, program)
    except OSError as exc:
        print(f"agentd mcp: cannot start {program[0]!r}: {exc}", file=sys.stderr)
        return 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
