"""A real, throwaway Redis Cluster for tests: three masters (``redis-server
--cluster-enabled yes``) on free ports in a temp dir, no persistence, no replicas."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, free_port


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH; install it (e.g. apt-get install redis)")
    return found


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too and still a valid port."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            port = random.randint(20_000, 30_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _ClusterNode(RedisServer):
    """One master: a RedisServer started in cluster mode (its nodes.conf in its temp dir)."""

    def start(self, timeout_s: float = 10.0) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="lc-redis-cluster-"))
        args = [_binary("redis-server"), "--save", "", "--appendonly", "no"]
        args += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._dir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "5000"]
        log = (self._dir / "redis.log").open("ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor
        self._wait_ready(timeout_s)


class RedisCluster:
    """``start()`` / ``flushall()`` / ``close()``; ``url`` is the engine's seed list."""

    def __init__(self, masters: int = 3) -> None:
        ports = set[int]()
        while len(ports) < masters:
            ports.add(_free_cluster_port())
        self.servers = [_ClusterNode(port) for port in sorted(ports)]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        """Every master as a seed: ``redis://127.0.0.1:p1,redis://127.0.0.1:p2,...``."""
        return ",".join(server.url.removesuffix("/0") for server in self.servers)

    def start(self, timeout_s: float = 30.0) -> None:
        try:
            for server in self.servers:
                server.start()
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            create = ["--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(
                [_binary("redis-cli"), *create],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )
            self.wait_ok(timeout_s)
        except BaseException:
            self.close()
            raise

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def cluster_client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def flushall(self) -> None:
        """Empty every master (FLUSHALL is per node in a cluster)."""
        for port in self.ports:
            with self.client(port) as client:
                client.flushall()

    def owner(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        with self.cluster_client() as cluster:
            return int(cluster.get_node_from_key(key).port)

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` and agrees every slot is served."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._node_ok(port) for port in self.ports):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis cluster on {self.ports} not ok within {timeout_s}s")

    def _node_ok(self, port: int) -> bool:
        with self.client(port) as client:
            info = client.execute_command("CLUSTER", "INFO")
        text = info if isinstance(info, str) else str(info)
        return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text
