"""``bananas worker`` subprocesses draining queues spread over the 3 shards of a real Redis Cluster: every job runs
once, a resharding in the middle of a drain loses nothing. Reuses the worker harness of ``test_redis_worker``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas_redis.testing import sibling_module
from bananas_redis.testing_ha import LocalCluster, command, ha_binary
from redis.crc import key_slot

from bananas import Bananas

_harness = sibling_module(__file__, "test_redis_worker.py")
Harness, wait_until = _harness.Harness, _harness.wait_until

_PLUGINS = "bananas-redis,bananas-router-job-type"
_BINARY = ha_binary()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_BINARY is None, reason="needs redis-server 7+ and redis-cli"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    assert _BINARY is not None
    with LocalCluster(_BINARY).start() as made:
        yield made


def _ranges(cluster: LocalCluster) -> dict[int, list[tuple[int, int]]]:
    """Node port -> its slot ranges."""
    out: dict[int, list[tuple[int, int]]] = {}
    for start, end, master, *_ in command(cluster.nodes[0].port, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
        out.setdefault(int(master[1]), []).append((int(start), int(end)))
    return out


def _owner(ranges: dict[int, list[tuple[int, int]]], slot: int) -> int:
    return next(port for port, rs in ranges.items() if any(a <= slot <= b for a, b in rs))


def _queues_on_every_shard(prefix: str, ranges: dict[int, list[tuple[int, int]]], per_shard: int) -> list[str]:
    """``per_shard`` queue names on each node (``q<n>``, the first that land there)."""
    chosen: dict[int, list[str]] = {port: [] for port in ranges}
    n = 0
    while any(len(v) < per_shard for v in chosen.values()):
        name = f"q{n}.normal"
        port = _owner(ranges, key_slot(f"{{{prefix}:{name}}}".encode()))
        if len(chosen[port]) < per_shard:
            chosen[port].append(name)
        n += 1
    return [q for names in chosen.values() for q in names]


def _routed(tmp_path: Path, url: str) -> Harness:
    """The worker harness, plus job types ``work-<queue>`` routed to ``<queue>`` (``[routes]``) once queues are
    chosen (:func:`_route`)."""
    return Harness(tmp_path, url)


def _route(h: Harness, queues: list[str]) -> None:
    """Job types ``work-<base>`` go to queue ``<base>.normal`` (the ``job-type`` router); ``queues`` are those
    queue names."""
    bases = [q.removesuffix(".normal") for q in queues]
    with open(h.dir / "wapp.py", "a") as app:
        app.write("".join(f"app.job({'work-' + b!r})(work)\n" for b in bases))
    toml = (h.dir / "bananas.toml").read_text()
    routes = "\n[routes]\n" + "".join(f'"work-{b}" = "{b}"\n' for b in bases)
    (h.dir / "bananas.toml").write_text('router = "job-type"\n' + toml + routes)
    h.env["BANANAS_LOAD_PLUGINS"] = _PLUGINS
    h.app.close()
    h.app = Bananas(config=str(h.dir / "bananas.toml"), env={"BANANAS_LOAD_PLUGINS": _PLUGINS})


def _check_once(h: Harness, keys: list[str], timeout: float) -> Counter[str]:
    wait_until(lambda: set(keys) <= set(h.events.keys("succeeded")), timeout, "every job to succeed")
    return Counter(h.events.keys("start"))


def test_a_worker_drains_six_queues_on_three_shards_every_job_once(cluster: LocalCluster, tmp_path: Path) -> None:
    # Given 60 jobs spread over 6 queues, two on each of the 3 shards
    h = _routed(tmp_path, cluster.url)
    try:
        queues = _queues_on_every_shard(h.prefix, _ranges(cluster), per_shard=2)
        assert len({_owner(_ranges(cluster), key_slot(f"{{{h.prefix}:{q}}}".encode())) for q in queues}) == 3
        _route(h, queues)
        keys = [f"job{i}" for i in range(60)]
        for i, key in enumerate(keys):
            h.enqueue(f"work-{queues[i % len(queues)].removesuffix('.normal')}", key)

        # When one worker subprocess reads all six queues
        started = time.monotonic()
        h.worker("a", WORKER_QUEUES=",".join(queues))

        # Then every job runs exactly once, fetched from every shard
        starts = _check_once(h, keys, timeout=30)
        assert all(starts[key] == 1 for key in keys), {k: n for k, n in starts.items() if n != 1}
        print(f"drained 60 jobs over 6 queues on 3 shards in {time.monotonic() - started:.2f}s")
    finally:
        h.close()


def test_a_resharding_during_a_drain_loses_nothing(cluster: LocalCluster, tmp_path: Path) -> None:
    # Given 600 jobs over 6 queues on 3 shards, one queue in the first 200 slots of its node (so a resharding of
    # 200 slots moves it), and a worker draining them slowly
    h = _routed(tmp_path, cluster.url)
    try:
        ranges = _ranges(cluster)
        queues = _queues_on_every_shard(h.prefix, ranges, per_shard=2)
        source_port, (first, _) = next((p, rs[0]) for p, rs in sorted(ranges.items()))
        moving = next(
            f"m{n}.normal" for n in range(100000)
            if first <= key_slot(f"{{{h.prefix}:m{n}.normal}}".encode()) < first + 200
        )
        queues[0] = moving
        _route(h, queues)
        keys = [f"job{i}" for i in range(600)]
        for i, key in enumerate(keys):
            h.enqueue(f"work-{queues[i % len(queues)].removesuffix('.normal')}", key, payload={"secs": 0.005})
        h.worker("a", WORKER_QUEUES=",".join(queues))
        wait_until(lambda: len(h.events.keys("succeeded")) >= 30, 20, "the drain to start")

        # When 200 slots (with the moving queue) move to another node mid-drain
        source = next(n for n in cluster.nodes if n.port == source_port)
        target = next(n for n in cluster.nodes if n.port != source_port)
        cluster.reshard(source, target, 200)
        assert cluster.owner(f"{{{h.prefix}:{moving}}}") is target
        assert len(h.events.keys("succeeded")) < len(keys), "the drain ended before the resharding: no test"

        # Then every job still succeeds (nothing lost); a job runs twice only if a lease expired meanwhile
        starts = _check_once(h, keys, timeout=90)
        twice = sorted(k for k, n in starts.items() if n > 1)
        print(f"resharding of 200 slots mid-drain: {len(keys)} jobs done, {len(twice)} ran twice")
        assert set(starts) == set(keys)
    finally:
        h.close()


def test_a_shard_masters_failover_during_a_drain_loses_nothing(tmp_path: Path) -> None:
    # Given a cluster of 3 masters with a replica each, and a worker draining 400 jobs over 6 queues on 3 shards
    assert _BINARY is not None
    with LocalCluster(_BINARY, replicas=1).start() as c:
        h = _routed(tmp_path, c.url)
        try:
            queues = _queues_on_every_shard(h.prefix, _ranges(c), per_shard=2)
            _route(h, queues)
            keys = [f"job{i}" for i in range(400)]
            for i, key in enumerate(keys):
                h.enqueue(f"work-{queues[i % len(queues)].removesuffix('.normal')}", key, payload={"secs": 0.02})
            worker = h.worker("a", WORKER_QUEUES=",".join(queues))
            wait_until(lambda: len(h.events.keys("succeeded")) >= 30, 20, "the drain to start")

            # When the master of one shard is SIGKILLed (by pid) mid-drain and its replica takes over its slots
            victim = c.owner(f"{{{h.prefix}:{queues[0]}}}")
            started = time.monotonic()
            victim.stop(kill=True)
            assert len(h.events.keys("succeeded")) < len(keys), "the drain ended before the failover: no test"
            wait_until(lambda: c.owner(f"{{{h.prefix}:{queues[0]}}}") is not victim, 30, "a replica to take over")
            print(f"replica took over {time.monotonic() - started:.1f}s after the kill")

            # Then the worker follows the new slot map by itself and every job succeeds (at least once)
            starts = _check_once(h, keys, timeout=90)
            twice = sorted(k for k, n in starts.items() if n > 1)
            print(f"shard failover mid-drain: all {len(keys)} jobs done {time.monotonic() - started:.1f}s after the "
                  f"kill, {len(twice)} ran twice")
            assert set(starts) == set(keys)
            assert worker.alive()
        finally:
            h.close()
