"""Redis-specific behaviour of RedisBroker: protocols, fencing, outages, restarts, weights, auth, TLS, costs."""

from __future__ import annotations

import asyncio
import importlib.metadata
import shutil
import time
import uuid
from collections import Counter

import pytest
import redis
from bananas_redis import RedisBroker, RedisOptions, bananas_register_brokers
from bananas_redis.keys import queue_keys
from bananas_redis.testing import RedisServer, free_port, make_certificates

from bananas.broker import BrokerOptions, BrokerSpec, Envelope
from bananas.errors import BrokerUnavailable, ConfigError
from bananas.testing.conformance import FakeClock


def _env(job_id: str, queue: str = "q", eta: float | None = None) -> Envelope:
    return Envelope(job_id, queue, job_id.encode(), eta)


def _commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    probe = ("cmdstat_info", "cmdstat_hello", "cmdstat_client")  # what this probe's own connection sends
    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(probe))


# -- plugin wiring ---------------------------------------------------------------------------------------------
def test_entry_point_registers_both_schemes():
    # Given the installed distribution's entry point
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bananas")}
    assert eps.get("redis") == "bananas_redis"

    # When its hook runs
    specs: list[BrokerSpec] = []
    bananas_register_brokers(register=specs.append)

    # Then it registers the Redis broker for redis:// and rediss:// with its options class (and the cluster and
    # sentinel brokers for theirs, with the same options)
    spec, cluster, sentinel = specs
    assert spec.schemes == ("redis", "rediss")
    assert spec.factory is RedisBroker
    assert spec.options is RedisOptions
    assert cluster.schemes == ("redis+cluster", "rediss+cluster")
    assert sentinel.schemes == ("redis+sentinel", "rediss+sentinel")
    assert {cluster.options, sentinel.options} == {RedisOptions}


def test_factory_does_no_io_and_rejects_other_schemes():
    # Given / When a broker is built for a port nobody listens on, nothing happens yet
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", RedisOptions())
    assert repr(broker).startswith("RedisBroker(")

    # Then only a wrong scheme fails, and it names the value
    with pytest.raises(ConfigError, match="http://x"):
        RedisBroker("http://x", RedisOptions())


def test_plain_broker_options_are_upgraded_and_options_are_validated():
    broker = RedisBroker("redis://127.0.0.1:6379/0", BrokerOptions(lease=12.0))
    assert isinstance(broker.options, RedisOptions)
    assert broker.options.lease == 12.0
    assert RedisOptions(priority_weights={"high": 6, "low": 1}).priority_weights == {"high": 6.0, "low": 1.0}
    with pytest.raises(ValueError, match="protocol"):
        RedisOptions(protocol=4)
    with pytest.raises(ValueError, match="prefix"):
        RedisOptions(prefix="a{b}")
    with pytest.raises(ValueError, match="priority_weights.low"):
        RedisOptions(priority_weights={"low": 0})
    assert "s3cret" not in repr(RedisBroker("redis://:s3cret@127.0.0.1:1/0"))


# -- protocols -------------------------------------------------------------------------------------------------
async def _scenario(broker: RedisBroker, clock: FakeClock) -> list[object]:
    out: list[object] = []
    await broker.enqueue([_env("a"), _env("b"), _env("c", "low"), _env("d", eta=clock.now + 5)])
    got = await broker.fetch(["q", "low"], 10, 0)
    out.append([(d.id, d.queue, d.body, d.token, d.deliveries, d.crashes) for d in got])
    out.append(await broker.ack(got[:1]))
    out.append(await broker.renew(got))
    out.append(await broker.retry(got[1], body=b"b2", at=clock.now + 1))
    out.append(await broker.dead_letter(got[2], body=b"c2", reason="failed"))
    clock.advance(10)
    out.append(await broker.move_due())
    out.append(await broker.reap())
    out.append(await broker.depths())
    out.append(await broker.known_queues())
    out.append([await broker.lookup(i) for i in "abcdz"])
    out.append(await broker.dead_letters("low"))
    out.append(await broker.requeue_dead("low"))
    out.append(await broker.purge_dead("low"))
    return out


@pytest.mark.parametrize("protocol", [2, 3])
async def test_resp2_and_resp3_give_identical_results(make_broker, protocol):
    # Given the same scenario under RESP2 (reference) and under the parametrized protocol, each on its own prefix
    clock2, clock = FakeClock(), FakeClock()
    reference = await _scenario(await make_broker(protocol=2, clock=clock2, prefix="p2" + uuid.uuid4().hex), clock2)

    # When it runs under the other protocol
    result = await _scenario(await make_broker(protocol=protocol, clock=clock, prefix="p" + uuid.uuid4().hex), clock)

    # Then every reply parses to the same values
    assert result == reference


# -- fencing ---------------------------------------------------------------------------------------------------
async def test_a_zombie_whose_lease_was_reaped_cannot_settle(make_broker):
    # Given a job fetched by a worker that then stalls past its lease
    clock = FakeClock()
    broker = await make_broker(clock=clock, lease=10.0)
    await broker.enqueue([_env("a")])
    (zombie,) = await broker.fetch(["q"], 1, 0)
    clock.advance(11)
    assert await broker.reap() == 1

    # When another worker takes it and the zombie wakes up
    (fresh,) = await broker.fetch(["q"], 1, 0)

    # Then the zombie can neither renew, ack, retry, dead-letter nor release it; the new holder can ack
    assert fresh.token != zombie.token and fresh.crashes == 1
    assert await broker.renew([zombie]) == [False]
    assert await broker.ack([zombie]) == [False]
    assert await broker.retry(zombie, body=b"x", at=clock.now) is False
    assert await broker.dead_letter(zombie, body=b"x", reason="zombie") is False
    assert await broker.release([zombie]) == [False]
    assert await broker.ack([fresh]) == [True]
    record = await broker.lookup("a")
    assert record is not None and (record.state, record.body, record.deliveries) == ("completed", b"a", 2)


async def test_tokens_of_another_queue_never_match(make_broker):
    # Given one job in each of two queues, fetched
    broker = await make_broker()
    await broker.enqueue([_env("a", "one"), _env("b", "two")])
    a, b = await broker.fetch(["one", "two"], 2, 0)

    # When a delivery is presented with the other queue's token
    forged = type(a)(a.id, a.queue, a.body, b.token, a.deliveries, a.crashes)

    # Then it is stale
    assert a.token != b.token
    assert await broker.ack([forged]) == [False]
    assert await broker.ack([a, b]) == [True, True]


# -- availability ----------------------------------------------------------------------------------------------
async def test_enqueue_against_a_closed_port_raises_broker_unavailable_within_the_timeout():
    # Given a broker whose Redis is not there
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", RedisOptions(timeout=1.0, connect_timeout=0.5))
    started = time.monotonic()

    # When / Then connect and enqueue fail fast with BrokerUnavailable
    with pytest.raises(BrokerUnavailable, match="unavailable during connect"):
        await broker.connect()
    with pytest.raises(BrokerUnavailable, match="unavailable during enqueue"):
        await broker.enqueue([_env("a")])
    assert time.monotonic() - started < 2.0
    await broker.close()


async def test_enqueue_against_a_silent_server_raises_within_the_timeout():
    # Given a TCP listener that accepts and never answers
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    broker = RedisBroker(f"redis://127.0.0.1:{port}/0", RedisOptions(timeout=0.5))
    started = time.monotonic()
    try:
        # When / Then the call gives up after its timeout instead of hanging
        with pytest.raises(BrokerUnavailable):
            await broker.enqueue([_env("a")])
        assert time.monotonic() - started < 1.5
    finally:
        await broker.close()
        listener.close()
        await listener.wait_closed()


async def test_worker_calls_give_up_after_retry_for():
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", RedisOptions(retry_for=0.3, retry_backoff=0.05))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="during reap"):
        await broker.reap()
    assert 0.25 < time.monotonic() - started < 1.5
    await broker.close()


async def test_a_restart_with_aof_keeps_jobs_and_wakes_a_blocked_fetch(redis_server, prefix):
    # Given an AOF-backed server with two stored jobs and a consumer blocked on an empty queue
    server = RedisServer(redis_server.binary, appendonly=True).start()
    try:
        options = RedisOptions(prefix=prefix, retry_backoff=0.02, retry_backoff_max=0.2)
        producer = RedisBroker(server.url, options)
        consumer = RedisBroker(server.url, options)
        await producer.connect()
        await consumer.connect()
        await producer.enqueue([_env("kept-1"), _env("kept-2")])
        waiting = asyncio.create_task(consumer.fetch(["w"], 1, 20.0))
        await asyncio.sleep(0.2)
        assert not waiting.done()

        # When Redis is killed and comes back, and a job is sent to the consumer's queue
        await asyncio.to_thread(server.restart, kill=True)
        await producer.enqueue([_env("after", "w")])

        # Then the blocked fetch recovers and gets it, and the earlier jobs are still there
        got = await asyncio.wait_for(waiting, 15.0)
        assert [d.id for d in got] == ["after"]
        kept = await consumer.fetch(["q"], 10, 0)
        assert sorted(d.id for d in kept) == ["kept-1", "kept-2"]
        assert await consumer.ack([*got, *kept]) == [True, True, True]
        await producer.close()
        await consumer.close()
    finally:
        server.cleanup()


async def test_settling_survives_a_restart(redis_server, prefix):
    # Given a held job on an AOF-backed server that restarts
    server = RedisServer(redis_server.binary, appendonly=True).start()
    try:
        broker = RedisBroker(server.url, RedisOptions(prefix=prefix, retry_backoff=0.02, retry_backoff_max=0.2))
        await broker.connect()
        await broker.enqueue([_env("a")])
        held = await broker.fetch(["q"], 1, 0)
        await asyncio.to_thread(server.stop, kill=True)

        # When the worker acks while Redis is down and Redis returns meanwhile
        ack = asyncio.create_task(broker.ack(held))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.start)

        # Then the ack goes through (the scripts are loaded again after NOSCRIPT)
        assert await asyncio.wait_for(ack, 10.0) == [True]
        await broker.close()
    finally:
        server.cleanup()


# -- priorities ------------------------------------------------------------------------------------------------
async def test_strict_priority_never_takes_low_while_high_waits(make_broker):
    broker = await make_broker()
    await broker.enqueue([_env(f"h{i}", "high") for i in range(20)] + [_env(f"l{i}", "low") for i in range(20)])
    got = []
    for _ in range(20):
        got += await broker.fetch(["high", "low"], 1, 0)
    assert {d.queue for d in got} == {"high"}


async def test_weighted_priorities_never_starve_low(make_broker):
    # Given full queues and weights high=6, normal=3, low=1
    broker = await make_broker(priority_weights={"high": 6, "normal": 3, "low": 1})
    await broker.enqueue([_env(f"{q}{i}", q) for q in ("high", "normal", "low") for i in range(150)])

    # When 150 single fetches run
    taken: Counter[str] = Counter()
    for _ in range(150):
        taken.update(d.queue for d in await broker.fetch(["high", "normal", "low"], 1, 0))

    # Then every queue is served, roughly by weight
    assert taken["low"] > 0
    assert taken["high"] > taken["normal"] > taken["low"]


async def test_a_fetch_over_several_queues_takes_in_priority_order_up_to_its_limit_in_one_round_trip(
    make_broker, redis_url, prefix
):
    # Given jobs in three queues
    broker = await make_broker()
    await broker.enqueue([_env(f"h{i}", "t.high") for i in range(2)] + [_env(f"n{i}", "t.normal") for i in range(3)]
                         + [_env(f"l{i}", "t.low") for i in range(5)])
    sent = []
    send = broker._send

    async def counting(commands):
        sent.append(len(commands))
        return await send(commands)

    broker._send = counting
    queues = ["t.high", "t.normal", "t.low"]
    # When a fetch asks for 4, then for 10
    first = await broker.fetch(queues, 4, 0)
    rest = await broker.fetch(queues, 10, 0)
    # Then each is one round trip, the first takes the high jobs then the oldest normal ones, and nothing is lost
    assert [d.id for d in first] == ["h0", "h1", "n0", "n1"]
    assert [d.id for d in rest] == ["n2", *(f"l{i}" for i in range(5))]
    assert len(sent) == 2
    assert await broker.fetch(queues, 10, 0) == []
    # And the fetches' shared counters are gone
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys(f"{prefix}:take-budget:*") == []
    finally:
        client.close()


async def test_weighted_fetch_falls_through_to_non_empty_queues(make_broker):
    broker = await make_broker(priority_weights={"high": 100, "low": 1})
    await broker.enqueue([_env(f"l{i}", "cpu.low") for i in range(5)])
    got = await broker.fetch(["cpu.high", "cpu.low"], 5, 0)
    assert [d.id for d in got] == [f"l{i}" for i in range(5)]


# -- wake-ups and costs ----------------------------------------------------------------------------------------
async def test_a_blocked_fetch_wakes_within_milliseconds(make_broker):
    consumer = await make_broker()
    producer = await make_broker()
    assert await consumer.fetch(["a", "b"], 1, 0.05) == []  # the fetcher is now idle (blocks first)
    latencies = []
    for i in range(5):
        waiting = asyncio.create_task(consumer.fetch(["a", "b"], 1, 5.0))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await producer.enqueue([_env(f"j{i}", "b")])
        got = await asyncio.wait_for(waiting, 5.0)
        latencies.append(time.perf_counter() - started)
        assert [d.id for d in got] == [f"j{i}"]
    assert sorted(latencies)[2] < 0.05


async def test_a_fetch_woken_by_a_lower_queue_takes_from_it_in_one_call_and_keeps_priority(make_broker, redis_url):
    consumer = await make_broker()
    producer = await make_broker()
    client = redis.Redis.from_url(redis_url)
    try:
        assert await consumer.fetch(["p.high", "p.normal", "p.low"], 2, 0.05) == []  # idle: blocks first
        # Given a fetch blocked on three queues, When a job arrives in the lowest one
        waiting = asyncio.create_task(consumer.fetch(["p.high", "p.normal", "p.low"], 2, 5.0))
        await asyncio.sleep(0.05)
        def calls() -> int:
            return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)

        before = calls()
        await producer.enqueue([_env("elsewhere", "p.other")])  # what one enqueue costs alone
        enqueue_cost = calls() - before
        before = calls()
        await producer.enqueue([_env("low-1", "p.low")])
        got = await asyncio.wait_for(waiting, 5.0)
        # Then the woken fetch takes it with one script call (the two higher queues were empty when it woke)
        assert [d.id for d in got] == ["low-1"]
        assert calls() - before == enqueue_cost + 1
        # And a take that finds work keeps looking at the higher queues first
        await producer.enqueue([_env("low-2", "p.low"), _env("high-1", "p.high")])
        assert [d.id for d in await consumer.fetch(["p.high", "p.normal", "p.low"], 1, 5.0)] == ["high-1"]
    finally:
        client.close()


async def test_an_idle_fetch_costs_at_most_one_command_per_second(make_broker, redis_url):
    broker = await make_broker()
    await broker.fetch(["x", "y", "z"], 4, 0.05)
    before = _commands(redis_url)
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        await broker.fetch(["x", "y", "z"], 4, 1.0)
    spent = _commands(redis_url) - before
    assert spent <= 3, f"{spent} commands in 2 s of idling"


async def test_reap_repairs_a_wake_up_lost_with_a_dead_fetcher(make_broker, redis_url, prefix):
    # Given a ready job whose wake-up token was consumed by a fetcher that died before taking it
    consumer = await make_broker()
    assert await consumer.fetch(["q"], 1, 0.05) == []
    producer = await make_broker()
    await producer.enqueue([_env("a")])
    client = redis.Redis.from_url(redis_url)
    qk = queue_keys(prefix, "q")
    client.delete(qk.signal, qk.wake, qk.type_signal(""))  # every wake-up list of the queue
    client.close()
    waiting = asyncio.create_task(consumer.fetch(["q"], 1, 5.0))
    await asyncio.sleep(0.2)
    assert not waiting.done()

    # When any worker's reaper runs
    await producer.reap()

    # Then the blocked fetch wakes and gets the job
    got = await asyncio.wait_for(waiting, 5.0)
    assert [d.id for d in got] == ["a"]


async def test_batches_cost_one_round_trip(make_broker, monkeypatch):
    broker = await make_broker()
    await broker.enqueue([_env("warm", "q")])
    await broker.ack(await broker.fetch(["q"], 1, 0))
    calls: list[int] = []
    send = broker._send

    async def counting(commands):
        calls.append(len(commands))
        return await send(commands)

    monkeypatch.setattr(broker, "_send", counting)
    await broker.enqueue([_env(f"j{i}") for i in range(1000)])
    assert len(calls) == 1
    calls.clear()
    got = await broker.fetch(["q"], 64, 0)
    assert len(got) == 64 and len(calls) == 1
    calls.clear()
    assert all(await broker.ack(got))
    assert len(calls) == 1


async def test_scripts_are_reloaded_after_script_flush(make_broker, redis_url):
    broker = await make_broker()
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    client.close()
    await broker.enqueue([_env("a")])
    assert [d.id for d in await broker.fetch(["q"], 1, 0)] == ["a"]


async def test_retention_sets_redis_expiry_on_settled_records(make_broker, redis_url, prefix):
    broker = await make_broker(completed_ttl=100.0, dead_ttl=1000.0)
    await broker.enqueue([_env("a"), _env("b")])
    a, b = await broker.fetch(["q"], 2, 0)
    await broker.ack([a])
    await broker.dead_letter(b, body=b"b", reason="failed")
    client = redis.Redis.from_url(redis_url)
    keys = queue_keys(prefix, "q")
    assert 90 <= client.ttl(keys.job("a")) <= 100
    assert 990 <= client.ttl(keys.job("b")) <= 1000
    client.close()


async def test_one_live_copy_per_id_across_queues(make_broker):
    broker = await make_broker()
    await broker.enqueue([_env("a", "high")])
    await broker.enqueue([_env("a", "low")])  # live in high: dropped
    assert (await broker.depths(["high", "low"]))["low"].ready == 0
    (d,) = await broker.fetch(["high"], 1, 0)
    await broker.ack([d])
    await broker.enqueue([_env("a", "low")])  # completed in high: enqueued anew in low
    record = await broker.lookup("a")
    assert record is not None and (record.queue, record.state) == ("low", "ready")
    assert await broker.known_queues() == ["high", "low"]


# -- authentication and TLS ------------------------------------------------------------------------------------
async def test_password_url(redis_server, prefix):
    server = RedisServer(redis_server.binary, extra=("--requirepass", "s3cret")).start()
    try:
        broker = RedisBroker(f"redis://:s3cret@127.0.0.1:{server.port}/0", RedisOptions(prefix=prefix))
        await broker.connect()
        await broker.enqueue([_env("a")])
        assert [d.id for d in await broker.fetch(["q"], 1, 0)] == ["a"]
        await broker.close()
        wrong = RedisBroker(f"redis://:nope@127.0.0.1:{server.port}/0", RedisOptions(prefix=prefix))
        with pytest.raises(BrokerUnavailable) as info:
            await wrong.connect()
        assert "nope" not in str(info.value)
        await wrong.close()
    finally:
        server.cleanup()


async def test_acl_user_url(redis_server, prefix):
    server = RedisServer(redis_server.binary).start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "worker", "on", ">w0rk", "~*", "&*", "+@all")
        admin.close()
        broker = RedisBroker(f"redis://worker:w0rk@127.0.0.1:{server.port}/0", RedisOptions(prefix=prefix))
        await broker.connect()
        await broker.enqueue([_env("a")])
        assert [d.id for d in await broker.fetch(["q"], 1, 1.0)] == ["a"]
        await broker.close()
    finally:
        server.cleanup()


async def test_rediss_url_with_ca_and_client_certificate(redis_server, prefix, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = make_certificates(str(tmp_path))
    tls_port = free_port()
    server = RedisServer(
        redis_server.binary,
        extra=(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            certs["server.crt"],
            "--tls-key-file",
            certs["server.key"],
            "--tls-ca-cert-file",
            certs["ca.crt"],
            "--tls-auth-clients",
            "yes",
        ),
    )
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"{redis_server.binary} has no TLS support: {exc}")
    try:
        options = RedisOptions(
            prefix=prefix,
            ssl_ca_certs=certs["ca.crt"],
            ssl_certfile=certs["client.crt"],
            ssl_keyfile=certs["client.key"],
        )
        broker = RedisBroker(f"rediss://127.0.0.1:{tls_port}/0", options)
        await broker.connect()
        await broker.enqueue([_env("a")])
        assert [d.id for d in await broker.fetch(["q"], 1, 1.0)] == ["a"]
        await broker.close()
        untrusted = RedisBroker(f"rediss://127.0.0.1:{tls_port}/0", RedisOptions(prefix=prefix, timeout=2.0))
        with pytest.raises(BrokerUnavailable):
            await untrusted.connect()
        await untrusted.close()
    finally:
        server.cleanup()


# -- optional capabilities and lazy maintenance -------------------------------------------------------------------
def _home_keys(url: str, prefix: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in client.scan_iter(match="{" + prefix + ":home:*"))
    finally:
        client.close()


async def test_enqueue_sync_is_one_round_trip_and_claims_homes_only_for_explicit_ids(
    make_broker, redis_url, prefix, monkeypatch
):
    # Given a connected broker (scripts loaded, queue registered)
    from bananas.job import new_job_id

    broker = await make_broker()
    await asyncio.to_thread(broker.enqueue_sync, [_env("warm")])
    calls: list[list[str]] = []
    send = broker._send_sync

    def counting(commands):
        calls.append([c[0] for c in commands])
        return send(commands)

    monkeypatch.setattr(broker, "_send_sync", counting)

    # When a batch of generated ids and one explicit id go in through the blocking lane
    generated = [new_job_id() for _ in range(50)]
    envs = [_env(i) for i in generated] + [_env("explicit")]
    await asyncio.to_thread(broker.enqueue_sync, envs, generated_ids=set(generated))

    # Then one round trip: one script call for the queue and one home claim, for the explicit id only
    assert calls == [["EVALSHA", "EVALSHA"]]
    assert [k.rsplit(":", 1)[-1] for k in _home_keys(redis_url, prefix)] == ["explicit", "warm"]
    got = await broker.fetch(["q"], 100, 0)
    assert [d.id for d in got] == ["warm", *generated, "explicit"]


async def test_a_generated_id_enqueued_again_explicitly_elsewhere_stays_single(make_broker, redis_url, prefix):
    # Given a job with a generated id (no home key) ready in "a"
    from bananas.job import new_job_id

    broker = await make_broker()
    job_id = new_job_id()
    await broker.enqueue_with_hints([_env(job_id, "a")], generated_ids={job_id})
    assert _home_keys(redis_url, prefix) == []

    # When a producer sends the same id explicitly to "b"
    await broker.enqueue([_env(job_id, "b")])

    # Then the copy in "b" was withdrawn, the home points at "a", and a later explicit enqueue is refused at once
    assert [d.id for d in await broker.fetch(["b"], 10, 0)] == []
    client = redis.Redis.from_url(redis_url)
    try:
        (key,) = _home_keys(redis_url, prefix)
        assert client.get(key) == b"a"
    finally:
        client.close()
    await broker.enqueue([_env(job_id, "b")])
    assert [d.id for d in await broker.fetch(["a", "b"], 10, 0)] == [job_id]


async def test_enqueue_sync_against_a_closed_port_raises_broker_unavailable():
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", RedisOptions(timeout=0.5, connect_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="during enqueue"):
        broker.enqueue_sync([_env("a")])
    assert time.monotonic() - started < 3.0
    await broker.close()


async def test_ack_and_fetch_is_one_round_trip(make_broker, monkeypatch):
    # Given two running jobs and more ready
    broker = await make_broker()
    await broker.enqueue([_env(f"j{i}") for i in range(6)])
    running = await broker.fetch(["q"], 2, 0)
    calls: list[int] = []
    send = broker._send

    async def counting(commands):
        calls.append(len(commands))
        return await send(commands)

    monkeypatch.setattr(broker, "_send", counting)

    # When they are acked and the next ones taken
    owned, got = await broker.ack_and_fetch(running, ["q"], 4)

    # Then one round trip did both
    assert owned == [True, True] and [d.id for d in got] == ["j2", "j3", "j4", "j5"]
    assert calls == [2]


async def test_an_idle_reaper_sends_nothing_until_a_lease_can_expire(make_broker, redis_url):
    # Given a running job (lease 30 s) in one queue and a reap that just ran
    clock = FakeClock()
    broker = await make_broker(clock=clock, lease=30.0)
    await broker.enqueue([_env("a"), _env("b", "other")])
    (job,) = await broker.fetch(["q"], 1, 0)
    assert await broker.reap() == 0

    # When reaps run again before the lease can have expired
    before = _commands(redis_url)
    clock.advance(29.0)
    for _ in range(5):
        assert await broker.reap() == 0

    # Then they cost nothing, and once the lease expired the next reap recovers the job
    assert _commands(redis_url) - before == 0
    clock.advance(2.0)
    assert await broker.reap() == 1
    assert [d.id for d in await broker.fetch(["q"], 1, 0)] == ["a"]
    assert await broker.ack([job]) == [False]


async def test_the_lazy_reaper_notices_leases_taken_by_other_workers(make_broker):
    # Given a reaper that looked at an empty queue, then another worker (same lease) that took a job there
    clock = FakeClock()
    reaper = await make_broker(clock=clock, lease=10.0)
    other = await make_broker(clock=clock, lease=10.0)
    await other.enqueue([_env("a", "fresh")])
    assert await reaper.reap() == 0
    clock.advance(5.0)
    assert [d.id for d in await other.fetch(["fresh"], 1, 0)] == ["a"]

    # When that worker dies and its lease expires
    clock.advance(10.5)

    # Then the reaper recovers the job on its next call
    assert await reaper.reap() == 1
