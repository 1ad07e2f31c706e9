"""Helpers for the adversarial suite: connect as an identity and watch NATS refuse things."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import nats
from nats.aio.client import Client

from agentd.bus import Credentials
from tests.harness import DaemonProcess

if TYPE_CHECKING:
    from agentd.config import TlsConfig

__all__ = [
    "Attacker",
    "RawConnection",
    "connected",
    "records_where",
    "refused",
    "rss_mb",
    "self_signed",
]

VIOLATION_WAIT_S = 3.0


@dataclass
class Attacker:
    """A NATS connection as some identity, with the server's refusals it has received."""

    nc: Client
    errors: list[str] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def refused(self, what: str, subject: str) -> bool:
        """Did the server answer `what` ("publish" / "subscription") on `subject` with a
        permissions violation? Waits for the error to arrive."""
        needle = f'permissions violation for {what} to "{subject}"'.lower()
        with anyio.move_on_after(VIOLATION_WAIT_S):
            while not any(needle in e.lower() for e in self.errors):
                await self.changed.wait()
        return any(needle in e.lower() for e in self.errors)

    async def publish_refused(self, subject: str, data: bytes = b"{}") -> bool:
        await self.nc.publish(subject, data, reply=self.nc.new_inbox())
        await self.nc.flush()
        return await self.refused("publish", subject)

    async def subscribe_refused(self, subject: str) -> bool:
        await self.nc.subscribe(subject)
        await self.nc.flush()
        return await self.refused("subscription", subject)


def agent_creds(daemon: DaemonProcess, agent: str) -> Path:
    return daemon.state_dir / "credentials" / "agents" / f"{agent}.creds"


@contextlib.asynccontextmanager
async def connected(
    daemon: DaemonProcess, creds: Credentials | Path | None, **options: Any
) -> AsyncIterator[Attacker]:
    """Connect to the daemon's NATS as `creds` (a file or Credentials; None: the daemon)."""
    if isinstance(creds, Path):
        creds = Credentials.load(creds)
    attacker_box: list[Attacker] = []

    async def on_error(exc: Exception) -> None:
        if attacker_box:
            attacker = attacker_box[0]
            attacker.errors.append(str(exc))
            attacker.changed.set()
            attacker.changed = anyio.Event()

    auth = creds.connect_options() if creds is not None else daemon.nats_options()
    nc = await nats.connect(daemon.url, error_cb=on_error, **auth, **options)
    attacker_box.append(Attacker(nc))
    try:
        yield attacker_box[0]
    finally:
        if not nc.is_closed:
            await nc.close()


async def request_json(nc: Client, subject: str, body: Any, **kw: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await nc.request(subject, data, timeout=kw.pop("timeout", 5.0), **kw)
    return json.loads(reply.data)


def records_where(
    daemon: DaemonProcess, kind: str, predicate: Any, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """Decision records of `kind` that satisfy `predicate`, waiting for the recorder's next
    batch (it writes every 50 ms) up to `timeout_s`; [] if none came."""
    import time

    from tests.harness import decision_records

    deadline = time.monotonic() + timeout_s
    while True:
        found = [r for r in decision_records(daemon.state_dir, kind) if predicate(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


class RawConnection:
    """A NATS client connection spoken by hand (no client library, so nothing of it outlives
    the test): CONNECT with an identity's credentials, then watch the server's verdict."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, daemon: DaemonProcess, creds: Credentials) -> tuple[RawConnection, bytes]:
        """Connect as `creds`; returns the connection and the server's first answer line
        (b"PONG": accepted; b"-ERR 'Authorization Violation'": refused)."""
        import base64

        from agentd.identity import public_key_of, sign

        port = int(daemon.url.rsplit(":", 1)[1])
        conn = cls(await anyio.connect_tcp("127.0.0.1", port))
        info = json.loads((await conn.line()).split(b" ", 1)[1])
        connect: dict[str, Any] = {"verbose": False, "pedantic": False, "protocol": 1}
        if creds.nkey_seed:
            signature = sign(creds.nkey_seed, info["nonce"].encode())
            connect["nkey"] = public_key_of(creds.nkey_seed)
            connect["sig"] = base64.urlsafe_b64encode(signature).decode().rstrip("=")
        if creds.user:
            connect["user"], connect["pass"] = creds.user, creds.password
        await conn.stream.send(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        return conn, await conn.line()

    async def line(self) -> bytes:
        with anyio.fail_after(5):
            while b"\r\n" not in self.buffer:
                self.buffer += await self.stream.receive()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def closed_by_server(self, timeout_s: float) -> bytes:
        """Wait until the server closes the connection; returns what it said before."""
        said = b""
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    said += await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return said

    async def aclose(self) -> None:
        await self.stream.aclose()


async def refused(daemon: DaemonProcess, creds: Credentials) -> bool:
    """Does the server refuse a new connection with `creds`?"""
    conn, answer = await RawConnection.open(daemon, creds)
    await conn.aclose()
    return answer.startswith(b"-ERR 'Authorization Violation'")


def self_signed(folder: Path) -> TlsConfig:
    """A self-signed certificate for 127.0.0.1 (its own CA), written under `folder`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from agentd.config import TlsConfig

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsConfig(
        cert_file=folder / "cert.pem", key_file=folder / "key.pem", ca_file=folder / "cert.pem"
    )


def rss_mb(pid: int) -> float:
    """A process's resident memory in MiB (VmRSS), for the figures the suite prints."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
