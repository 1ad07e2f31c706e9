"""The MCP client's transports: a stdio server's Unix socket, or streamable HTTP.

A stdio server started by the daemon has its stdin and stdout on a socket (`_mcp_launch.py`);
`socket_transport` speaks MCP's stdio framing (one JSON-RPC message per line) over it, as the
SDK's `stdio_client` does over pipes, and calls `on_closed` when the server's end goes away
(it died): the session then fails the calls in flight. HTTP servers use the SDK's own
`streamablehttp_client`, with headers read from the environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCMessage

__all__ = ["MAX_LINE_BYTES", "connect_socket", "header_values", "socket_transport"]

MAX_LINE_BYTES = 16 << 20
"""The longest message a server may send; past it the connection is dropped."""

Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]
]


async def connect_socket(address: str) -> ByteStream:
    """Connect to the launcher's socket: `@name` is an abstract socket, else a path."""
    if address.startswith("@"):
        return await anyio.connect_unix("\0" + address[1:])
    return await anyio.connect_unix(address)


@contextlib.asynccontextmanager
async def socket_transport(
    stream: ByteStream, on_closed: Callable[[], None]
) -> AsyncIterator[Streams]:
    """MCP's stdio framing over `stream`: the (read, write) streams a `ClientSession` takes."""
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](16)

    async def reader() -> None:
        buffer = b""
        try:
            async with read_send:
                async for chunk in stream:
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    if len(buffer) > MAX_LINE_BYTES:
                        raise ValueError(f"a message over {MAX_LINE_BYTES} bytes")
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            message = JSONRPCMessage.model_validate_json(line)
                        except ValueError as exc:  # the session reports it and goes on
                            await read_send.send(exc)
                            continue
                        await read_send.send(SessionMessage(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ValueError):
            pass
        finally:
            on_closed()

    async def writer() -> None:
        try:
            async with write_recv:
                async for message in write_recv:
                    data = message.message.model_dump_json(by_alias=True, exclude_none=True)
                    await stream.send(data.encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            on_closed()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_recv, write_send
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await stream.aclose()


def header_values(
    headers_env: Mapping[str, str], server: str, environ: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Each header's value from its environment variable; `KeyError`-free: a variable that is
    not set is a `LookupError` naming the server, the header and the variable."""
    env = os.environ if environ is None else environ
    values = {}
    for header, var in headers_env.items():
        value = env.get(var)
        if value is None:
            raise LookupError(
                f"[tools.mcp.{server}].headers_env.{header}: ${var} is not set in the "
                "daemon's environment"
            )
        values[header] = str(value)
    return values
