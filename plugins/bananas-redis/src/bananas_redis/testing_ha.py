"""Throwaway Redis Clusters and Sentinel groups for tests and benchmarks (loopback only, every process stopped by pid).

``LocalCluster(binary, masters=3).start()`` starts ``masters`` ``redis-server --cluster-enabled yes`` nodes on free
ports and joins them with ``redis-cli --cluster create … --cluster-replicas 0``; ``url`` is its
``redis+cluster://`` URL. ``LocalSentinels(binary).start()`` starts a master, one replica and three sentinels
(quorum 2, ``down-after-milliseconds`` 1000) monitoring it as ``service``; ``url`` is its ``redis+sentinel://`` URL.
Both reuse :class:`bananas_redis.testing.RedisServer` for every process, and are context managers
(``with LocalCluster(binary).start() as cluster:``) that stop every process by pid on the way out. The tests on them
get their connected brokers and result backends from :func:`bananas_redis.testing.connected_brokers` /
:func:`~bananas_redis.testing.connected_backends`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import Self

import attrs

from bananas_redis.testing import RedisServer, find_redis_servers, free_port

__all__ = ["LocalCluster", "LocalSentinels", "command", "ha_binary", "redis_cli"]


def redis_cli(binary: str) -> str | None:
    """The ``redis-cli`` next to ``binary`` (or on ``PATH``), or ``None``."""
    beside = os.path.join(os.path.dirname(binary), "redis-cli")
    return beside if os.access(beside, os.X_OK) else shutil.which("redis-cli")


def ha_binary() -> str | None:
    """The first redis-server of :func:`~bananas_redis.testing.find_redis_servers` that is 7.0 or newer (clusters
    use ``--cluster-port``) with a ``redis-cli`` to build clusters, or ``None`` (the tests then skip)."""
    for label, path in find_redis_servers():
        major = label.removeprefix("redis-").split(".")[0]
        if major.isdigit() and int(major) >= 7 and redis_cli(path):
            return path
    return None


def command(port: int, *args: str | int, timeout: float = 5.0) -> object:
    """One command to ``127.0.0.1:port`` with redis-py's blocking client (no pool kept)."""
    import redis

    client = redis.Redis(port=port, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _info(port: int) -> dict[str, object]:
    reply = command(port, "INFO", "replication")
    return reply if isinstance(reply, dict) else {}


class _StoppedOnExit:
    """``with group.start() as group:``: :meth:`cleanup` (every process stopped by pid) on the way out."""

    __slots__ = ()

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: BLE001 - a node still starting up
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


@attrs.define(eq=False)
class LocalCluster(_StoppedOnExit):
    """A Redis Cluster of ``masters`` nodes (no replicas) on loopback.

    With ``tls`` (the paths of :func:`bananas_redis.testing.make_certificates`) every node also listens with TLS on
    one of ``tls_ports`` (``tls-cluster yes``: the cluster announces those) and ``url`` is ``rediss+cluster://``; the
    plain ports stay for the test's own admin commands."""

    binary: str
    masters: int = 3
    tls: dict[str, str] | None = None
    replicas: int = 0  # per master (--cluster-replicas): a killed master's replica takes over its slots
    nodes: list[RedisServer] = attrs.field(factory=list)
    tls_ports: list[int] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        if self.tls:
            return "rediss+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.tls_ports[:2]) + "/"
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2]) + "/"

    def _tls_args(self) -> tuple[str, ...]:
        if not self.tls:
            return ()
        self.tls_ports.append(free_port())
        return ("--tls-port", str(self.tls_ports[-1]), "--tls-cluster", "yes", "--tls-replication", "yes",
                "--tls-cert-file", self.tls["server.crt"], "--tls-key-file", self.tls["server.key"],
                "--tls-ca-cert-file", self.tls["ca.crt"], "--tls-auth-clients", "no")

    def start(self, timeout: float = 30.0) -> LocalCluster:
        cli = redis_cli(self.binary)
        if cli is None:
            raise RuntimeError("redis-cli not found: it builds the cluster")
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                node = RedisServer(
                    self.binary,
                    # the bus port defaults to port + 10000, which may be taken or past 65535: a free one
                    extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--cluster-node-timeout", "2000", "--cluster-port", str(free_port()), *self._tls_args()),
                )
                self.nodes.append(node.start())
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )
            for node in self.nodes:
                _wait(lambda node=node: "cluster_state:ok" in str(command(node.port, "CLUSTER", "INFO")), timeout,
                      f"cluster_state:ok on {node.port}")
            # A replica that never synced refuses to fail over (its data is "too old"): wait for every link
            _wait(lambda: sum(_info(n.port).get("master_link_status") == "up" for n in self.nodes)
                  == self.masters * self.replicas, timeout, "every replica in sync")
        except BaseException:
            self.cleanup()
            raise
        return self

    def masters_now(self) -> list[RedisServer]:
        """The nodes that serve slots now (a promoted replica included)."""
        ports = set()
        for node in self.nodes:
            if node.process is None:
                continue
            for _, _, master, *_ in command(node.port, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
                ports.add(int(master[1]))
            break
        return [n for n in self.nodes if n.port in ports]

    def node_id(self, node: RedisServer) -> str:
        return str(command(node.port, "CLUSTER", "MYID"))

    def owner(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot now."""
        live = [n for n in self.nodes if n.process is not None]
        slot = int(command(live[0].port, "CLUSTER", "KEYSLOT", key))  # type: ignore[call-overload]
        for start, end, master, *_ in command(live[0].port, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no owner for slot {slot}")

    def reshard(self, source: RedisServer, target: RedisServer, slots: int, timeout: float = 60.0) -> None:
        """Move ``slots`` slots (with their keys) from ``source`` to ``target`` with ``redis-cli --cluster reshard``."""
        cli = redis_cli(self.binary)
        assert cli is not None
        subprocess.run(
            [cli, "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", self.node_id(source),
             "--cluster-to", self.node_id(target), "--cluster-slots", str(slots), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )

    def flush(self) -> None:
        for node in self.nodes:
            command(node.port, "FLUSHALL")

    def cleanup(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.cleanup()


_SENTINEL_CONF = """\
sentinel monitor {service} 127.0.0.1 {port} 2
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 4000
sentinel parallel-syncs {service} 1
"""


@attrs.define(eq=False)
class LocalSentinels(_StoppedOnExit):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2) monitoring it as ``service``.

    With ``tls`` (the paths of :func:`bananas_redis.testing.make_certificates`) every process also listens with TLS
    (``tls_port``), replication and the sentinels' own links use TLS, and ``url`` is ``rediss+sentinel://``; the
    plain ports stay for the test's own admin commands."""

    binary: str
    service: str = "bananas"
    replicas: int = 1
    sentinels: int = 3
    tls: dict[str, str] | None = None
    data: list[RedisServer] = attrs.field(factory=list)
    watchers: list[RedisServer] = attrs.field(factory=list)
    tls_port: dict[int, int] = attrs.field(factory=dict)  # plain port -> TLS port of every process

    @property
    def url(self) -> str:
        if self.tls:
            hosts = ",".join(f"127.0.0.1:{self.tls_port[s.port]}" for s in self.watchers)
            return f"rediss+sentinel://{hosts}/{self.service}/0"
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.watchers) + f"/{self.service}/0"

    def master(self) -> RedisServer:
        """The data node the sentinels name as master now."""
        host, port = command(self.watchers[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[misc]
        return next(n for n in self.data if int(port) in (n.port, self.tls_port.get(n.port)))

    def _server(self, *extra: str) -> RedisServer:
        if not self.tls:
            return RedisServer(self.binary, extra=extra)
        tls_port = free_port()
        server = RedisServer(self.binary, extra=(
            *extra, "--tls-port", str(tls_port), "--tls-replication", "yes", "--tls-cert-file",
            self.tls["server.crt"], "--tls-key-file", self.tls["server.key"], "--tls-ca-cert-file",
            self.tls["ca.crt"], "--tls-auth-clients", "no"))
        self.tls_port[server.port] = tls_port
        return server

    def start(self, timeout: float = 30.0) -> LocalSentinels:
        try:
            master = self._server().start()
            self.data.append(master)
            master_port = self.tls_port.get(master.port, master.port)  # replicas and sentinels use TLS if on
            for _ in range(self.replicas):
                replica = self._server("--replicaof", "127.0.0.1", str(master_port))
                self.data.append(replica.start())
            for replica in self.data[1:]:
                _wait(lambda r=replica: _info(r.port).get("master_link_status") == "up",
                      timeout, f"replica {replica.port} in sync")
            for _ in range(self.sentinels):
                watcher = self._server("--sentinel")
                conf = os.path.join(watcher.dir, "sentinel.conf")
                with open(conf, "w") as out:
                    out.write(_SENTINEL_CONF.format(service=self.service, port=master_port))
                watcher.config_file = conf
                self.watchers.append(watcher.start())
            for watcher in self.watchers:  # every sentinel knows the replica and the other sentinels
                _wait(lambda w=watcher: self._settled(w), timeout, f"sentinel {watcher.port} discovery")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _settled(self, watcher: RedisServer) -> bool:
        info = command(watcher.port, "SENTINEL", "MASTER", self.service)
        fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))  # type: ignore
        return int(fields["num-slaves"]) >= self.replicas and int(fields["num-other-sentinels"]) >= self.sentinels - 1

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote a replica (the old master becomes a replica)."""
        command(self.watchers[0].port, "SENTINEL", "FAILOVER", self.service)

    def wait_new_master(self, old: RedisServer, timeout: float = 20.0) -> RedisServer:
        """Wait until the sentinels name another master than ``old`` and it accepts writes; return it."""
        def moved() -> bool:
            new = self.master()
            return new is not old and _info(new.port).get("role") == "master"

        _wait(moved, timeout, "a new master")
        return self.master()

    def cleanup(self) -> None:
        servers: Sequence[RedisServer] = [*self.watchers, *self.data]
        self.watchers, self.data = [], []
        for server in servers:
            server.cleanup()

