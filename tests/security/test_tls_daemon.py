"""A daemon whose NATS speaks TLS: the daemon, its replicas and agentctl all connect over TLS
with their credentials, and a client that does not speak TLS is refused."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.harness import running_daemon, write_config
from tests.security.support import self_signed

pytestmark = pytest.mark.integration


def test_a_daemon_on_tls(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    config = write_config(tmp_path, extra="[autoscale]\nenabled = false\n")
    text = config.read_text().replace(
        "[bus.embedded]",
        f'[bus.tls]\ncert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n'
        f'ca_file = "{tls.ca_file}"\n[bus.embedded]',
    )
    config.write_text(text)
    with running_daemon(config) as daemon:
        status = json.loads(daemon.agentctl("--json", "status").stdout)
        assert status["nats_url"].startswith("tls://")
        out = daemon.agentctl("send", "echo", '{"over": "tls"}', "--wait")  # replica on TLS
        assert out.returncode == 0 and json.loads(out.stdout) == {"over": "tls"}, out.stderr

        async def plain_client() -> bytes:
            port = int(daemon.url.rsplit(":", 1)[1])
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                info = await stream.receive()
                await stream.send(b"CONNECT {}\r\nPING\r\n")
                with anyio.fail_after(5):
                    try:
                        while True:
                            info += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return info

        said = anyio.run(plain_client)
        assert b'"tls_required":true' in said and b"PONG" not in said
        assert daemon.stop() == 0
