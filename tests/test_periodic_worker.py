"""Periodic jobs in the worker on the memory broker: the ticker with a fixed clock (catch-up policies, fencing,
state), the leader election between workers in threads, and ``bananas periodic list|run``.

The same on Redis with real processes (three schedulers, SIGKILL of the leader, downtime) is in
plugins/bananas-redis/tests/test_redis_periodic_e2e.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from bananas import Bananas, hookimpl
from bananas.broker import Broker
from bananas.cli import main
from bananas.periodic import scheduler_status, scheduler_status_async
from bananas.periodic.ticker import Ticker
from bananas.testing.conformance import FakeClock


async def _drain(broker: Broker) -> list[str]:
    ids: list[str] = []
    while got := await broker.fetch(["high", "normal", "low"], 100, 0.0):
        ids += [d.id for d in got]
        await broker.ack(got)
    return ids


@pytest.mark.asyncio
async def test_the_ticker_follows_each_catch_up_policy_after_a_downtime(make_app):
    # Given three every-minute schedules with the three policies, a fixed clock at a minute boundary and a leader
    app = make_app()
    for policy in ("none", "latest", "all"):
        app.periodic(policy, every="1m", job="tick", catch_up=policy)
    clock = FakeClock(now=1_800_000_000.0)
    broker = app.new_broker(clock=clock)
    await broker.connect()
    store = app.capabilities(broker).schedules
    token = await store.acquire_leader("me", 86400.0)
    ticker = Ticker(app, list(app.schedules), lambda: token, grace=10.0)

    # When the first check sees them, one tick passes on time, then every scheduler is down for an hour
    await ticker.check(broker)
    first = await _drain(broker)
    clock.advance(62)
    await ticker.check(broker)
    on_time = await _drain(broker)
    clock.advance(3630)  # the newest missed tick (…3660) is then 32 s old: beyond the grace
    await ticker.check(broker)
    after = Counter(job_id.split("-")[1] for job_id in await _drain(broker))

    # Then nothing runs at first sight, the on-time tick runs for all three, and after the downtime: none runs
    # nothing, latest one tick, all each of the 60 missed ticks
    assert first == []
    assert sorted(on_time) == sorted(f"periodic-{p}-1800000060" for p in ("none", "latest", "all"))
    assert after == {"latest": 1, "all": 60}
    states = {row["name"]: row for row in (await scheduler_status_async(app))["schedules"]}
    assert states["none"]["last_status"] == "missed 60"
    assert states["latest"]["last_status"] == "enqueued; missed 59"
    assert states["all"]["last_status"] == "enqueued" and states["all"]["last_tick"] == 1_800_003_660.0
    assert {row["next_run"] for row in states.values()} == {1_800_003_720.0}
    await broker.close()


@pytest.mark.asyncio
async def test_a_ticker_with_a_stale_token_enqueues_nothing(make_app):
    # Given a schedule that is due, and a leader whose lease was taken over
    app = make_app()
    app.periodic("beat", every="1m", job="tick")
    clock = FakeClock(now=1_800_000_000.0)
    broker = app.new_broker(clock=clock)
    await broker.connect()
    store = app.capabilities(broker).schedules
    old = await store.acquire_leader("old", 10.0)
    stale = Ticker(app, list(app.schedules), lambda: old, grace=10.0)
    await stale.check(broker)  # first sight: records the state
    clock.advance(61)
    new = await store.acquire_leader("new", 10.0)

    # When the stale leader checks, and then the live one
    await stale.check(broker)
    stale_ids = await _drain(broker)
    await Ticker(app, list(app.schedules), lambda: new, grace=10.0).check(broker)

    # Then only the live leader enqueues the tick
    assert stale_ids == []
    assert await _drain(broker) == ["periodic-beat-1800000060"]
    await broker.close()


class _Enqueued:
    """Records the id of every job an app enqueues (``bananas_job_enqueued``)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    @hookimpl
    def bananas_job_enqueued(self, job) -> None:
        self.ids.append(job.id)


def test_two_workers_elect_one_leader_that_enqueues_each_tick_once_and_hands_over(make_app, wait_for):
    # Given two thin workers (both schedulers) with an every-second schedule; the first starts alone and leads
    records = [_Enqueued(), _Enqueued()]
    apps = []
    for record in records:
        app = make_app(overrides={"worker.scheduler_lease": 1.0}, plugins=[record])
        app.job("beat")(lambda: None)
        app.periodic("beat", every="1s")
        apps.append(app)
    workers = [app.worker() for app in apps]
    for worker in workers:
        worker.fetch_wait = 0.2
    threads = [workers[0].start_in_thread()]
    try:
        wait_for(lambda: len(records[0].ids) >= 2, timeout=10)
        first_leader = scheduler_status(apps[0])["leader"]
        threads.append(workers[1].start_in_thread())

        # When both run for 2 s, then the leader stops and the other runs on alone
        time.sleep(2)
        workers[0].request_stop()
        threads[0].join(10)
        wait_for(lambda: len(records[1].ids) >= 3, timeout=10)
        second_leader = scheduler_status(apps[1])["leader"]
    finally:
        for worker, thread in zip(workers, threads, strict=False):
            worker.request_stop()
            thread.join(10)

    # Then one process enqueued at a time: every tick once, consecutive seconds, and the lease changed hands
    ids = records[0].ids + records[1].ids
    ticks = sorted(int(job_id.rsplit("-", 1)[1]) for job_id in ids)
    assert len(ids) == len(set(ids))
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert min(int(i.rsplit("-", 1)[1]) for i in records[1].ids) > max(int(i.rsplit("-", 1)[1]) for i in records[0].ids)
    assert first_leader is not None and second_leader is not None
    assert second_leader["token"] > first_leader["token"]


def test_a_worker_that_runs_no_scheduler_enqueues_no_tick(make_app, run_worker):
    # Given a default-mode worker with the scheduler off and an every-second schedule
    app = make_app(overrides={"worker.mode": "default", "worker.enable_scheduler": False})
    ran: list[int] = []

    @app.job("beat")
    def beat() -> None:
        ran.append(1)

    app.periodic("beat", every="1s")

    # When it runs for 2.5 s
    run_worker(app)
    time.sleep(2.5)

    # Then nobody leads and no tick was enqueued
    status = scheduler_status(app)
    assert status["leader"] is None and ran == []
    assert status["schedules"][0]["last_status"] == "never ran"


@pytest.fixture
def cli(memory_url, tmp_path, monkeypatch, capsys):
    for key in ("BANANAS_BROKER", "REDIS_URL", "BANANAS_CONFIG", "BANANAS_PERIODIC"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cronapp.py").write_text(
        "from bananas import Bananas\n"
        f"app = Bananas(broker={memory_url!r}, entrypoints=False)\n"
        "@app.job()\ndef heartbeat(beat=0):\n    return beat\n"
        "app.periodic('heartbeat', every='30s', payload={'beat': 1})\n"
        "app.periodic('weekly', cron='0 9 * * 1', job='heartbeat', timezone='Europe/Berlin')\n"
    )

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        return done.value.code, out, err

    return run


def test_periodic_list_and_run_on_memory(cli, memory_url):
    # Given an app with two schedules and no scheduler running
    # When they are listed (table and JSON) and one is run now
    code, out, err = cli("periodic", "--app", "cronapp", "list")
    jcode, jout, _ = cli("periodic", "--app", "cronapp", "list", "--json")
    rcode, rout, _ = cli("periodic", "--app", "cronapp", "run", "heartbeat")
    bcode, bout, _ = cli("periodic", "--app", "cronapp", "--broker", memory_url, "list", "--json")

    # Then the table names each schedule with its trigger, zone, next run and status; run prints a job id
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "leader: none (no scheduler is running)"
    assert lines[1].split() == ["NAME", "SCHEDULE", "TZ", "NEXT", "RUN", "LAST", "RUN", "LAST", "STATUS"]
    assert lines[2].split()[:4] == ["heartbeat", "every", "30s", "-"] and lines[2].endswith("never ran")
    assert lines[3].split()[:7] == ["weekly", "0", "9", "*", "*", "1", "Europe/Berlin"]
    data = json.loads(jout)
    assert jcode == 0 and data["capability"] is True and data["leader"] is None
    assert [row["name"] for row in data["schedules"]] == ["heartbeat", "weekly"]
    assert data["schedules"][1]["next_run"] > time.time()
    assert bcode == 0 and [row["name"] for row in json.loads(bout)["schedules"]] == ["heartbeat", "weekly"]
    assert rcode == 0 and len(rout.strip()) == 32
    app = Bananas(broker=memory_url, env={}, entrypoints=False)
    job = app.get_job(rout.strip())
    assert (job.name, job.payload, job.headers["periodic"]) == ("heartbeat", {"beat": 1}, "heartbeat")
    app.close()


def test_periodic_run_of_an_unknown_name_is_one_line(cli):
    code, _, err = cli("periodic", "--app", "cronapp", "run", "nightly")
    assert code == 2
    assert err.strip() == "Error: no periodic job named 'nightly'; known: heartbeat, weekly"


@pytest.mark.asyncio
async def test_a_tick_carries_the_schedules_options_queue_and_jitter(make_app):
    # Given a schedule with every per-schedule option, and a due tick
    app = make_app()

    @app.job("report", max_retries=1, timeout=30)
    def report(day: str) -> None: ...

    app.periodic("nightly", every="1m", job="report", payload={"day": "today"}, queue="reports", priority="high",
                 max_retries=7, timeout="5m", jitter="20s")
    clock = FakeClock(now=1_800_000_000.0)
    broker = app.new_broker(clock=clock)
    await broker.connect()
    store = app.capabilities(broker).schedules
    token = await store.acquire_leader("me", 86400.0)
    ticker = Ticker(app, list(app.schedules), lambda: token, grace=10.0)
    await ticker.check(broker)
    clock.advance(60)  # exactly the tick: any jitter above 0 leaves the job scheduled (at 61 s, one in 20 was due)

    # When the ticker enqueues the tick
    await ticker.check(broker)

    # Then the job has the schedule's payload, queue, priority, retries, timeout and headers, and waits its jitter
    record = await broker.lookup("periodic-nightly-1800000060")
    assert record is not None and record.queue == "reports" and record.state == "scheduled"
    job = app.codec.decode(record.body)
    assert (job.name, job.payload, job.priority.value, job.max_retries, job.timeout) == (
        "report", {"day": "today"}, "high", 7, 300.0)
    assert job.headers["periodic"] == "nightly" and float(job.headers["periodic-tick"]) == 1_800_000_060.0
    assert 1_800_000_060.0 <= job.scheduled_at <= 1_800_000_080.0  # the tick plus up to 20 s
    await broker.close()


def test_bananas_worker_with_a_periodic_job_without_handler_exits_2_with_one_line(cli, tmp_path):
    # Given an app whose schedule names a job it does not register
    (tmp_path / "badapp.py").write_text(
        "from bananas import Bananas\n"
        "app = Bananas(broker='memory://badapp', entrypoints=False)\n"
        "@app.job()\ndef cleanup():\n    pass\n"
        "app.periodic('weekly_report', cron='0 9 * * 1', job='generate_weekly_report')\n"
    )

    # When a thin worker (a scheduler) starts
    code, _, err = cli("worker", "--app", "badapp", "--mode", "thin")

    # Then it refuses at once with one line naming the schedule and the field
    assert code == 2
    assert err.strip() == (
        "Error: invalid periodic 'weekly_report' job = 'generate_weekly_report' (from app.periodic): no handler of "
        "that name is registered in the app; registered: cleanup"
    )


@pytest.mark.asyncio
async def test_a_partitioned_leader_stops_acting_before_its_lease_ends_and_another_takes_over(make_app):
    # Given two candidates on one broker, the first leading with a 1.5 s lease
    from bananas.errors import BrokerUnavailable
    from bananas.worker.leader import Leadership

    app = make_app()
    broker = app.new_broker()
    store = app.capabilities(broker).schedules
    first, second = Leadership(store, "a", 1.5), Leadership(store, "b", 1.5)
    await first.beat(broker)
    await second.beat(broker)
    assert first.holds() and first.fence() is not None and not second.holds()

    # When the first loses the broker (every renewal fails) and time passes
    class Partitioned:
        async def renew_leader(self, *args: object) -> bool:
            raise BrokerUnavailable("partitioned")

    first.schedules = Partitioned()  # type: ignore[assignment]
    with pytest.raises(BrokerUnavailable):
        await first.beat(broker)
    await asyncio.sleep(1.1)  # past 2/3 of the lease since its last renewal, before the lease ends
    stopped_acting = not first.holds() and first.fence() is None
    await second.beat(broker)
    too_early = second.holds()
    await asyncio.sleep(0.6)  # the lease has ended now
    await second.beat(broker)

    # Then the first stopped acting on its own before the broker let the second take over with a greater token
    assert stopped_acting and not too_early
    assert second.holds() and second.token is not None and second.token > (first.token or 0)
