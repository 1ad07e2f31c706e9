"""An agent cannot make the server act on the daemon's streams for it.

NATS does not check a message's reply subject against the sender's permissions, and JetStream
takes an empty message as a request: an agent that sends a pull request (or a KV write, an ack,
any request something answers) with the reply subject `$JS.API.STREAM.PURGE.<stream>` gets the
server to send that purge for it. With every identity in a NATS account of its own, the answer
lands in the sender's account, which has no JetStream at all. Each attack here runs from
alpha's own credentials against the real daemon, then the daemon's streams are checked: every
planted message is still there. The control runs the same attack against a server that keeps
the same subject permissions in one shared account (agentd before accounts): it purges.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from agentd.api import register_with_token
from agentd.bus import Subjects
from agentd.identity import agent_permissions, new_user_seed, public_key_of
from tests.harness import NATS_SERVER, DaemonProcess, free_port
from tests.security.support import agent_creds, connected

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

INBOX, DLQ, TRACE = "AGENTD_INBOX", "AGENTD_DLQ", "AGENTD_TRACE"
RUNS, RESULTS = "KV_agentd_runs", "KV_agentd_tool_results"
OWN_CONSUMER = f"$JS.API.CONSUMER.MSG.NEXT.{INBOX}.inbox-alpha"
# what the server's answer would do, sent to the daemon's JetStream API
TARGETS = [
    f"$JS.API.STREAM.PURGE.{DLQ}",
    f"$JS.API.STREAM.PURGE.{INBOX}",
    f"$JS.API.STREAM.DELETE.{TRACE}",
    f"$JS.API.STREAM.PURGE.{RESULTS}",
    f"$JS.API.STREAM.DELETE.{RUNS}",
    f"$JS.API.CONSUMER.DELETE.{INBOX}.inbox-beta",
    f"$JS.API.CONSUMER.DELETE.{TRACE}.trace-ingest",
]
# a short pull: the server answers it with a 408 status message when it expires
EXPIRING_PULL = json.dumps({"batch": 1, "expires": 100_000_000}).encode()


async def _pull(nc: Client, target: str) -> None:
    await nc.publish(OWN_CONSUMER, EXPIRING_PULL, reply=target)


async def _empty_pull(nc: Client, target: str) -> None:
    await nc.publish(OWN_CONSUMER, b'{"batch": 1, "no_wait": true}', reply=target)


async def _kv_write(nc: Client, target: str) -> None:
    # JetStream acks a write to the run ledger on the reply subject
    await nc.publish("$KV.agentd_runs.run.alpha.attack", b"", reply=target)


async def _kv_read(nc: Client, target: str) -> None:
    get = "$JS.API.DIRECT.GET.KV_agentd_runs.$KV.agentd_runs.run.alpha.none"
    await nc.publish(get, b"", reply=target)


async def _router_answer(nc: Client, target: str) -> None:
    # the router answers every message, here a refusal
    await nc.publish("agentd.out.alpha.nobody", b"{}", reply=target)


async def _daemon_answer(nc: Client, target: str) -> None:
    await nc.publish("agentd.dead.alpha", b"{}", reply=target)


VECTORS: dict[str, Callable[[Client, str], Awaitable[None]]] = {
    "expiring pull": _pull,
    "empty pull": _empty_pull,
    "kv write ack": _kv_write,
    "kv direct get": _kv_read,
    "router reply": _router_answer,
    "dead-letter reply": _daemon_answer,
}


@contextlib.asynccontextmanager
async def planted(daemon: DaemonProcess) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Messages in every stream the attacks aim at, and a check that they are all still
    there (as the daemon sees them)."""
    async with connected(daemon, None) as admin:
        js = admin.nc.jetstream()
        marks = {
            INBOX: (await js.publish("agentd.in.parked-nobody", b'{"parked": 1}')).seq,
            DLQ: (await js.publish("agentd.dlq.parked-nobody", b'{"parked": 1}')).seq,
            RUNS: await (await js.key_value("agentd_runs")).put("run.parked.x", b"1"),
            RESULTS: await (await js.key_value("agentd_tool_results")).put("parked", b"1"),
        }

        async def intact() -> None:
            for stream, seq in marks.items():
                got = await js.get_msg(stream, seq)
                assert got.data, f"{stream} lost message {seq}"
            assert (await js.stream_info(TRACE)).config.name == TRACE
            for stream, consumer in ((INBOX, "inbox-beta"), (TRACE, "trace-ingest")):
                assert (await js.consumer_info(stream, consumer)).name == consumer

        yield intact


@pytest.mark.parametrize("vector", sorted(VECTORS))
async def test_no_reply_subject_makes_the_server_act_for_an_agent(
    secure: DaemonProcess, vector: str
) -> None:
    async with planted(secure) as intact:
        async with connected(secure, agent_creds(secure, "alpha")) as alpha:
            for target in TARGETS:
                await VECTORS[vector](alpha.nc, target)
            await alpha.nc.flush()
            await anyio.sleep(0.5)  # past the pulls' expiry: every answer has been sent
        await intact()
    # and the daemon still routes and runs
    out = secure.agentctl("send", "beta", '{"after": "attack"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"after": "attack"}, out


async def test_an_ack_with_a_reply_subject_acts_on_nothing(secure: DaemonProcess) -> None:
    """The ack of a message alpha really holds, sent as a request whose reply is a purge."""
    assert secure.agentctl("drain", "alpha").returncode == 0  # alpha's replica stops pulling
    try:
        async with planted(secure) as intact:
            assert secure.agentctl("send", "alpha", '{"to": "ack"}').returncode == 0
            async with connected(secure, agent_creds(secure, "alpha")) as alpha:
                js = alpha.nc.jetstream()
                psub = await js.pull_subscribe_bind("inbox-alpha", stream=INBOX)
                (msg,) = await psub.fetch(1, timeout=5)
                for target in TARGETS:
                    await alpha.nc.publish(msg.reply, b"+ACK", reply=target)
                await alpha.nc.flush()
                await anyio.sleep(0.3)
            await intact()
    finally:
        assert secure.agentctl("start", "alpha").returncode == 0


async def test_a_registered_external_agent_cannot_either(secure: DaemonProcess) -> None:
    token = (secure.state_dir / "credentials" / "bootstrap.token").read_text().strip()
    spec = {"version": "1", "description": "raids", "tools": [], "models": []}
    creds, _ = await register_with_token(secure.url, token=token, name="raider", spec=spec)
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{INBOX}.inbox-raider"
    async with planted(secure) as intact:
        async with connected(secure, creds) as raider:
            for target in TARGETS:
                await raider.nc.publish(pull, EXPIRING_PULL, reply=target)
                await raider.nc.publish("$KV.agentd_runs.run.raider.x", b"", reply=target)
            await raider.nc.flush()
            await anyio.sleep(0.5)
        await intact()


# the control: the same permissions without accounts, as agentd had them


@contextlib.asynccontextmanager
async def shared_account_server() -> AsyncIterator[tuple[Client, Client]]:
    """A nats-server where the daemon and alpha share one account and alpha has exactly the
    subject permissions it has in agentd; yields (daemon, alpha) connections."""
    daemon_seed, alpha_seed = new_user_seed(), new_user_seed()
    alpha = agent_permissions(Subjects(), "alpha").render()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {json.dumps(tmp)} }}\n"
            "authorization { users: [\n"
            f'  {{nkey: "{public_key_of(daemon_seed)}"}}\n'
            f'  {{nkey: "{public_key_of(alpha_seed)}", permissions: {alpha}}}\n'
            "] }\n"
        )
        server = await anyio.open_process(
            [str(NATS_SERVER), "-c", str(conf)], stderr=subprocess.DEVNULL
        )
        try:
            url = f"nats://127.0.0.1:{port}"
            with anyio.fail_after(10):
                while True:
                    try:
                        daemon_nc = await nats.connect(url, nkeys_seed_str=daemon_seed)
                        break
                    except Exception:
                        await anyio.sleep(0.05)
            alpha_nc = await nats.connect(
                url, nkeys_seed_str=alpha_seed, inbox_prefix="_INBOX_a_alpha"
            )
            try:
                yield daemon_nc, alpha_nc
            finally:
                await alpha_nc.close()
                await daemon_nc.close()
        finally:
            server.terminate()
            with anyio.fail_after(10):
                await server.wait()


async def test_control_without_accounts_the_same_pull_purges_and_deletes() -> None:
    async with shared_account_server() as (daemon, alpha):
        js = daemon.jetstream()
        await js.add_stream(StreamConfig(name=INBOX, subjects=["agentd.in.>"]))
        await js.add_stream(StreamConfig(name=DLQ, subjects=["agentd.dlq.>"]))
        await js.add_stream(StreamConfig(name=TRACE, subjects=["agentd.trace.*"]))
        await js.add_consumer(
            INBOX, ConsumerConfig(durable_name="inbox-alpha", filter_subject="agentd.in.alpha")
        )
        await js.publish("agentd.dlq.beta", b"a dead letter")
        await _pull(alpha, f"$JS.API.STREAM.PURGE.{DLQ}")
        await _pull(alpha, f"$JS.API.STREAM.DELETE.{TRACE}")
        await alpha.flush()
        await anyio.sleep(0.5)
        assert (await js.stream_info(DLQ)).state.messages == 0  # purged by alpha
        with pytest.raises(NotFoundError):
            await js.stream_info(TRACE)  # deleted by alpha


async def test_a_rollup_on_its_own_ledger_key_purges_no_one_elses(secure: DaemonProcess) -> None:
    """`Nats-Rollup: all` on a write to one's own run-ledger key would purge the whole bucket
    (every agent's finished runs and leases): the bucket takes no rollups."""
    async with planted(secure) as intact:
        async with connected(secure, agent_creds(secure, "alpha")) as alpha:
            js = alpha.nc.jetstream()
            for rollup in ("all", "sub"):
                with contextlib.suppress(Exception):
                    await js.publish(
                        "$KV.agentd_runs.run.alpha.rollup", b"x", headers={"Nats-Rollup": rollup}
                    )
        await intact()


async def test_the_run_ledger_lists_no_keys_to_an_agent(secure: DaemonProcess) -> None:
    """Stream info with a subjects filter named every agent's message ids and leases; from an
    agent's account the JetStream API answers only that it has none."""
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        try:
            reply = await alpha.nc.request(
                "$JS.API.STREAM.INFO.KV_agentd_runs",
                json.dumps({"subjects_filter": ">"}).encode(),
                timeout=2,
            )
        except nats.errors.Error:  # refused outright: nothing listed either
            return
    assert b"agentd_runs.run." not in reply.data, reply.data[:300]
