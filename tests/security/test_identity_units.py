"""The identity pieces on their own, against a real nats-server started per test: the book's
users and a reload that revokes, signed requests, credentials files, and TLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from agentd.bus import Credentials, Subjects, connect, nats_server_config, write_private
from agentd.config import EmbeddedNatsConfig, TlsConfig
from agentd.errors import BusUnavailable, ConfigError, ControlError
from agentd.identity import (
    AUTH_HEADER,
    IdentityBook,
    MemoryTokenBook,
    ServerAuth,
    client_ssl_context,
    nats_tls_block,
    sign_request,
    verify_request,
)
from tests.harness import NATS_SERVER, free_port
from tests.security.support import RawConnection, self_signed

pytestmark = pytest.mark.anyio


class Server:
    def __init__(self, tmp: Path, book: IdentityBook, tls: TlsConfig | None = None) -> None:
        self.port = free_port()
        cfg = EmbeddedNatsConfig(port=self.port)
        store = tmp / "js"
        scheme = "tls" if tls and tls.enabled else "nats"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        block = nats_tls_block(tls) if tls else ""
        self.auth = ServerAuth(
            book,
            config_file=tmp / "nats-server.conf",
            render_config=lambda auth: nats_server_config(cfg, store, block + auth),
            server_pid=lambda: self.proc.pid,
            url=self.url,
            tls=client_ssl_context(tls) if tls else None,
        )
        self.auth.write()
        self.proc = subprocess.Popen(
            [str(NATS_SERVER), "--config", str(tmp / "nats-server.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        from agentd.bus import wait_until_listening

        await wait_until_listening("127.0.0.1", self.port, timeout_s=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def book(tmp_path: Path) -> IdentityBook:
    return IdentityBook(tmp_path / "state", Subjects(), Path("credentials/bootstrap.token"))


@pytest.fixture
def server(tmp_path: Path, book: IdentityBook) -> Iterator[Server]:
    running = Server(tmp_path, book)
    yield running
    running.stop()


class Daemonish:
    """What RawConnection needs of a daemon: its URL."""

    def __init__(self, url: str) -> None:
        self.url = url


async def test_a_reload_admits_a_new_identity_and_shuts_out_a_revoked_one(
    server: Server, book: IdentityBook
) -> None:
    await server.ready()
    creds, new = book.ensure_agent("alpha")
    assert new
    target = Daemonish(server.url)
    probe, before = await RawConnection.open(target, creds)  # type: ignore[arg-type]
    await probe.aclose()
    assert before.startswith(b"-ERR 'Authorization Violation'")  # not applied yet
    await server.auth.apply()
    conn, hello = await RawConnection.open(target, creds)  # type: ignore[arg-type]
    assert hello == b"PONG"
    book.revoke("agent:alpha")
    took = await server.auth.apply()
    started = time.monotonic()
    await conn.closed_by_server(timeout_s=1.0)
    await conn.aclose()
    assert took < 1.0 and time.monotonic() - started < 0.5
    assert not book.creds_path("agent:alpha").exists()
    probe, after = await RawConnection.open(target, creds)  # type: ignore[arg-type]
    await probe.aclose()
    assert after.startswith(b"-ERR 'Authorization Violation'")


def test_a_private_write_replaces_a_readable_file_with_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "secret"
    write_private(path, "one\n")
    assert path.parent.stat().st_mode & 0o777 == 0o700
    path.chmod(0o644)
    write_private(path, "two\n")
    assert path.read_text() == "two\n" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary file left


async def test_the_book_survives_a_restart_and_keeps_secrets_out(
    tmp_path: Path, book: IdentityBook
) -> None:
    path = book.issue_operator("alice", "viewer")
    assert path.stat().st_mode & 0o777 == 0o600
    again = IdentityBook(tmp_path / "state", Subjects(), Path("credentials/bootstrap.token"))
    assert again.identities["operator:alice"].role == "viewer"
    assert again.bootstrap_token == book.bootstrap_token
    stored = (tmp_path / "state" / "identity" / "book.json").read_text()
    seed = Credentials.load(path).nkey_seed
    assert seed and seed not in stored  # public keys only
    with pytest.raises(ControlError, match="role must be one of"):
        book.issue_operator("bob", "root")
    with pytest.raises(ControlError, match="operator name"):
        book.issue_operator("Bob Smith", None)


def test_a_credentials_file_says_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.creds"
    bad.write_text('{"identity": "agent:x", "extra": "y"}')
    with pytest.raises(ConfigError, match="unknown keys"):
        Credentials.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        Credentials.load(tmp_path / "missing.creds")


def test_signatures_bind_key_subject_body_and_time(book: IdentityBook) -> None:
    path = book.issue_operator("alice", "admin")
    alice = Credentials.load(path)
    body = b'{"args": {}}'
    headers = sign_request(alice, "agentd.ctl.ps", body)
    assert verify_request(book, "agentd.ctl.ps", body, headers).name == "alice"
    for subject, data, when in [
        ("agentd.ctl.scale", body, None),
        ("agentd.ctl.ps", b"{}", None),
        ("agentd.ctl.ps", body, time.time() + 3600),
    ]:
        with pytest.raises(ControlError) as err:
            verify_request(book, subject, data, headers, now=when)
        assert err.value.code == "unauthenticated"
    book.revoke("operator:alice")
    with pytest.raises(ControlError, match="not a known operator"):
        verify_request(book, "agentd.ctl.ps", body, headers)
    with pytest.raises(ControlError, match="malformed"):
        verify_request(book, "agentd.ctl.ps", body, {AUTH_HEADER: "a b"})


def test_a_revoked_token_stops_resolving_at_once() -> None:
    tokens = MemoryTokenBook()
    first = tokens.issue("alpha")
    beta = tokens.issue("beta")
    assert tokens.agent_for(first) == "alpha" and tokens.agent_for(beta) == "beta"
    second = tokens.issue("alpha")
    assert tokens.agent_for(first) is None and tokens.agent_for(second) == "alpha"
    tokens.revoke("alpha")
    assert tokens.agent_for(second) is None and tokens.agent_for(beta) == "beta"


async def test_nats_over_tls_with_credentials(tmp_path: Path, book: IdentityBook) -> None:
    tls = self_signed(tmp_path)
    server = Server(tmp_path, book, tls)
    try:
        await server.ready()
        creds, _ = book.ensure_agent("alpha")
        await server.auth.apply()  # the probe itself connects over TLS
        context = client_ssl_context(tls)
        assert isinstance(context, ssl.SSLContext)
        nc = await connect(server.url, name="t", reconnect=False, credentials=creds, tls=context)
        try:
            assert nc.connected_url is not None and nc.connected_url.scheme == "tls"
            await nc.publish("agentd.hb.alpha", json.dumps({"x": 1}).encode())
            await nc.flush()
        finally:
            await nc.close()
        with pytest.raises(BusUnavailable):  # a client that does not trust the CA
            await connect(
                server.url,
                name="t",
                reconnect=False,
                credentials=creds,
                tls=ssl.create_default_context(),
                timeout_s=2,
            )
    finally:
        server.stop()
        with anyio.CancelScope(shield=True):
            await anyio.lowlevel.checkpoint()
