"""Several hosts on one machine: a three-node nats-server cluster and network namespaces.

`Hosts` gives each agentd its own network namespace joined to a bridge (its own loopback, its
own ports, its own address), as separate machines would have; the NATS cluster listens on the
bridge's address. Where namespaces cannot be made (not root, no `ip`), every host shares the
loopback and `Hosts.isolated` says so.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import nats

from tests.harness import NATS_SERVER, free_port


@dataclass
class Hosts:
    """Network namespaces on a bridge, or the plain loopback."""

    isolated: bool
    server_ip: str  # where the NATS cluster listens
    namespaces: list[str] = field(default_factory=list)
    bridge: str = ""

    def prefix(self, index: int) -> list[str]:
        """The argv prefix that runs a command on host `index`."""
        if not self.isolated:
            return []
        return ["ip", "netns", "exec", self.namespaces[index]]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextmanager
def hosts(count: int) -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield Hosts(isolated=False, server_ip="127.0.0.1")
        return
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    subnet = f"10.{random.randrange(100, 250)}.{random.randrange(0, 250)}"
    made = Hosts(isolated=True, server_ip=f"{subnet}.1", bridge=f"agbr{tag}")
    try:
        _ip("link", "add", made.bridge, "type", "bridge")
        _ip("addr", "add", f"{made.server_ip}/24", "dev", made.bridge)
        _ip("link", "set", made.bridge, "up")
        for i in range(count):
            ns, veth = f"agentd-{tag}-{i}", f"agv{tag}{i}"
            _ip("netns", "add", ns)
            made.namespaces.append(ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", made.bridge)
            _ip("link", "set", veth, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{subnet}.{i + 2}/24", "dev", "eth0")
            _ip("netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError):
        _teardown(made)
        yield Hosts(isolated=False, server_ip="127.0.0.1")
        return
    try:
        yield made
    finally:
        _teardown(made)


def _teardown(made: Hosts) -> None:
    for ns in made.namespaces:
        with suppress(subprocess.CalledProcessError, OSError):
            _ip("netns", "del", ns)
    if made.bridge:
        with suppress(subprocess.CalledProcessError, OSError):
            _ip("link", "del", made.bridge)


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    conf: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.conf.parent / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(NATS_SERVER), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class NatsCluster:
    ip: str
    nodes: list[NatsNode]

    @property
    def url(self) -> str:
        return ",".join(f"nats://{self.ip}:{n.port}" for n in self.nodes)

    def node_url(self, index: int) -> str:
        return f"nats://{self.ip}:{self.nodes[index].port}"


@contextmanager
def nats_cluster(directory: Path, ip: str, size: int = 3) -> Iterator[NatsCluster]:
    """`size` nats-servers in one cluster with JetStream, ready for R3 streams."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [
        NatsNode(f"n{i}", free_port(), free_port(), directory / f"n{i}.conf") for i in range(size)
    ]
    routes = ", ".join(f"nats-route://{ip}:{n.cluster_port}" for n in nodes)
    for n in nodes:
        n.conf.write_text(
            f"""
server_name: {n.name}
listen: "{ip}:{n.port}"
jetstream {{
  store_dir: "{directory / n.name}"
  max_memory_store: 64MB
  max_file_store: 2GB
}}
cluster {{
  name: agentd-test
  listen: "{ip}:{n.cluster_port}"
  routes: [{routes}]
}}
"""
        )
        n.start()
    cluster = NatsCluster(ip, nodes)
    try:
        for n in nodes:
            _wait_listening(ip, n.port)
        anyio.run(_wait_for_jetstream, cluster.url)
        yield cluster
    finally:
        for n in nodes:
            n.stop(signal.SIGKILL)


def _wait_listening(ip: str, port: int, timeout_s: float = 30.0) -> None:
    # a failed nats.connect leaves tasks behind that warn; a bare TCP probe does not
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"no nats-server listening at {ip}:{port}")


async def _wait_for_jetstream(url: str, timeout_s: float = 60.0) -> None:
    """Until the cluster has elected its JetStream meta leader (streams can be created)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(url.split(","), connect_timeout=2, allow_reconnect=False)
        except Exception as exc:
            last = exc
            await anyio.sleep(0.2)
            continue
        try:
            await nc.jetstream().account_info()
            return
        except Exception as exc:
            last = exc
            await anyio.sleep(0.2)
        finally:
            await nc.close()
    raise TimeoutError(f"the NATS cluster at {url} has no JetStream leader: {last}")
