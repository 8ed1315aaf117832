"""The producer path (issue 17 point 4) against real redis-servers: what a producer inside a web request handler costs
(one round trip, one command, counted by Redis's own MONITOR), and the lean round trip of the blocking lane
(:mod:`bananas_redis.fastconn`): it is used for plain ``redis://``, reads the same replies and fails the same way."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.fastconn import FastLane
from bananas_redis.testing import RedisServer

from bananas import Bananas
from bananas.errors import BrokerMisconfigured, BrokerUnavailable, ConfigError
from bananas.plugin_api import Envelope

PLUGINS = {"BANANAS_LOAD_PLUGINS": "bananas-redis"}


def _env(job_id: str, queue: str = "q") -> Envelope:
    return Envelope(job_id, queue, b"body-" + job_id.encode(), None, "t")


class Monitor:
    """Every command Redis runs for a client, from ``MONITOR`` (commands a script runs are left out), until
    :meth:`stop`. A command sent by this helper ends the watch, so nothing is missed."""

    _END = "bananas-monitor-end"

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self._client = redis.Redis.from_url(url)
        self._end = redis.Redis.from_url(url)
        self._end.ping()  # connected before the watch starts: its handshake is not counted
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._client.monitor() as watch:
            self._started.set()
            for entry in watch.listen():
                command = entry["command"]
                if self._END in command:
                    return
                if entry.get("client_type") != "lua" and not command.startswith("MONITOR"):
                    self.commands.append(command.split(" ", 1)[0].upper())

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._started.wait(5)
        time.sleep(0.05)  # MONITOR is registered once its reply came; the reply came before started was set
        return self

    def __exit__(self, *exc: object) -> None:
        self._end.echo(self._END)
        self._end.close()
        self._thread.join(10)
        self._client.close()


@pytest.fixture
def app(redis_url: str, prefix: str) -> Iterator[Any]:
    app = Bananas(broker=redis_url, overrides={"broker_options": {"prefix": prefix}}, env=PLUGINS)

    @app.job("touch")
    def touch(key: str) -> None:  # pragma: no cover - never run here
        del key

    yield app
    app.close()


def test_a_sync_request_handler_adds_one_round_trip_per_enqueue(app, redis_url):
    # Given a web server's worker threads, each with a warm producer (its first request connects and loads scripts)
    def handler(request: int) -> str:
        return app.enqueue("touch", {"key": f"k{request}"}).id

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(handler, range(8)))
        broker_calls: list[int] = []
        for broker in list(app._brokers.values()):
            send = broker._send_sync

            def counted(commands, send=send):
                broker_calls.append(len(commands))
                return send(commands)

            broker._send_sync = counted

        # When requests enqueue one job each
        with Monitor(redis_url) as monitor:
            ids = list(pool.map(handler, range(100, 140)))

    # Then each one cost one round trip carrying one command: the script call that stores the job
    assert len(set(ids)) == 40
    assert broker_calls == [1] * 40
    assert monitor.commands == ["EVALSHA"] * 40


async def test_an_async_request_handler_adds_one_round_trip_per_enqueue(app, redis_url):
    # Given an event loop whose producer is warm (the first enqueue connects)
    await app.enqueue_async("touch", {"key": "warm"})
    broker = await app.broker()
    trips: list[int] = []
    send = broker._send

    async def counted(commands):
        trips.append(len(commands))
        return await send(commands)

    broker._send = counted

    # When concurrent requests each enqueue one job
    async def handler(request: int) -> str:
        return (await app.enqueue_async("touch", {"key": f"k{request}"})).id

    monitor = Monitor(redis_url)
    await asyncio.to_thread(monitor.__enter__)
    try:
        ids = await asyncio.gather(*(handler(i) for i in range(30)))
    finally:
        await asyncio.to_thread(monitor.__exit__)

    # Then each one cost one round trip carrying one command
    assert len(set(ids)) == 30
    assert trips == [1] * 30
    assert monitor.commands == ["EVALSHA"] * 30
    await app.aclose()


async def test_the_blocking_lane_uses_the_fast_round_trip_on_plain_redis(make_broker):
    broker = await make_broker()
    stored = await asyncio.to_thread(broker.enqueue_sync, [_env("a"), _env("a"), _env("b", "q2")])
    assert stored == [True, False, True]
    assert broker._sync_fast and all(isinstance(lane, FastLane) for lane in broker._sync_fast.values())
    # the same id again is a live copy: nothing stored, as on the async path
    assert await asyncio.to_thread(broker.enqueue_sync, [_env("a")]) == [False]
    assert [d.id for d in await broker.fetch(["q", "q2"], 10, 0)] == ["a", "b"]


@pytest.mark.parametrize("spin", [0, 1, 10_000])
async def test_every_spin_setting_reads_the_replies(make_broker, spin):
    broker = await make_broker(reply_spin_us=spin)
    ids = [f"s{i}" for i in range(300)]  # a reply larger than one read
    assert await asyncio.to_thread(broker.enqueue_sync, [_env(i) for i in ids]) == [True] * 300
    (lane,) = broker._sync_fast.values()
    assert lane.spin == spin / 1e6
    assert len(await broker.fetch(["q"], 1000, 0)) == 300


async def test_a_script_flush_is_reloaded_on_the_fast_lane(make_broker, redis_url):
    broker = await make_broker()
    await asyncio.to_thread(broker.enqueue_sync, [_env("before")])
    redis.Redis.from_url(redis_url).script_flush()
    assert await asyncio.to_thread(broker.enqueue_sync, [_env("after")]) == [True]
    assert broker._sync_fast


async def test_a_connection_killed_between_calls_is_replaced_at_once(make_broker, redis_url):
    broker = await make_broker()
    await asyncio.to_thread(broker.enqueue_sync, [_env("one")])
    admin = redis.Redis.from_url(redis_url)
    admin.client_kill_filter(_type="normal", skipme=True)  # every client but this one, the producer's too
    assert await asyncio.to_thread(broker.enqueue_sync, [_env("two")]) == [True]
    admin.close()


async def test_the_server_gone_mid_call_is_broker_unavailable(redis_server, prefix):
    # Given a producer on its own server, whose reply is held up (writes paused)
    server = RedisServer(redis_server.binary).start()
    broker = RedisBroker(server.url, RedisOptions(prefix=prefix, timeout=2.0, connect_timeout=0.5))
    try:
        await broker.connect()
        broker.enqueue_sync([_env("warm")])
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # the script call waits in the server
        admin.close()
        result: dict[str, BaseException] = {}

        def produce() -> None:
            try:
                broker.enqueue_sync([_env("lost")])
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                result["error"] = exc

        producer = threading.Thread(target=produce)
        producer.start()
        await asyncio.sleep(0.2)

        # When the server dies while the call waits for its reply
        server.stop(kill=True)
        await asyncio.to_thread(producer.join, 10)

        # Then the call fails with the one-line BrokerUnavailable (its retry found nothing listening)
        error = result["error"]
        assert isinstance(error, BrokerUnavailable) and not isinstance(error, BrokerMisconfigured)
        assert "unavailable during enqueue" in str(error) and "\n" not in str(error)
        assert "connection refused" in str(error)
        assert not broker._sync_fast  # the broken connection was dropped
    finally:
        await broker.close()
        server.cleanup()


async def test_a_password_required_after_connecting_is_broker_misconfigured(redis_server, prefix):
    # Given a producer whose fast lane is up on a server without a password
    server = RedisServer(redis_server.binary).start()
    broker = RedisBroker(server.url, RedisOptions(prefix=prefix, timeout=2.0))
    try:
        await broker.connect()
        broker.enqueue_sync([_env("warm")])
        assert broker._sync_fast

        # When the server starts requiring one and drops every client
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", "s3cret")
        admin.client_kill_filter(_type="normal", skipme=False)

        # Then the next enqueue says so in one line (NOAUTH), as on redis-py's path
        with pytest.raises(BrokerMisconfigured) as info:
            broker.enqueue_sync([_env("denied")])
        assert "password" in str(info.value).lower() and "\n" not in str(info.value)
    finally:
        await broker.close()
        server.cleanup()


@pytest.mark.parametrize("value", [-1, 10_001, 1.5, True, "200"])
def test_reply_spin_us_is_validated(value):
    with pytest.raises(ValueError, match="reply_spin_us: expected an integer from 0 to 10000"):
        RedisOptions(reply_spin_us=value)


def test_a_bad_reply_spin_us_in_the_config_names_the_table(redis_url):
    with pytest.raises(ConfigError, match=r"broker_options.*reply_spin_us"):
        Bananas(broker=redis_url, overrides={"broker_options": {"reply_spin_us": -5}}, env=PLUGINS)


async def test_a_reply_that_does_not_come_within_the_timeout_is_broker_unavailable(redis_server, prefix):
    # Given a producer with a short timeout whose lane is up
    server = RedisServer(redis_server.binary).start()
    broker = RedisBroker(server.url, RedisOptions(prefix=prefix, timeout=0.3, reply_spin_us=50))
    try:
        await broker.connect()
        await asyncio.to_thread(broker.enqueue_sync, [_env("warm")])
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("CLIENT", "PAUSE", 2000, "WRITE")  # the script call waits in the server
        admin.close()

        # When the reply takes longer than the timeout
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            await asyncio.to_thread(broker.enqueue_sync, [_env("late")])

        # Then the call gives up after about the timeout, in one line, and drops the connection (out of sync)
        assert time.monotonic() - started < 1.5
        assert "no reply within 0.3s" in str(info.value) and "\n" not in str(info.value)
        assert not broker._sync_fast
    finally:
        await broker.close()
        server.cleanup()
