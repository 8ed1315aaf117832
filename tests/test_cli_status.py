"""``bananas status`` and ``bananas workers`` on the kernel's memory:// broker (a worker in this process)."""

from __future__ import annotations

import json

import pytest

from bananas.broker import BrokerCapabilities
from bananas.cli import main
from bananas.cli_status import Section, gather


@pytest.fixture
def cli(memory_url, tmp_path, monkeypatch, capsys):
    """``cli(*args)`` → (exit status, stdout, stderr) of ``bananas ARGS`` in-process, on ``memory_url``."""
    for key in ("BANANAS_BROKER", "REDIS_URL", "BANANAS_CONFIG", "BANANAS_SERIALIZER", "BANANAS_RESULT_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bananas.toml").write_text(f'broker = "{memory_url}"\n')
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        return done.value.code, out, err

    return run


def test_status_shows_queues_workers_and_throughput(cli, make_app, run_worker, wait_for):
    # Given a live worker that ran 3 jobs, and 2 jobs waiting in low (no worker reads low)
    app = make_app()

    @app.job("ok")
    def ok() -> None:
        return None

    app.enqueue("ok", priority="low")
    app.enqueue("ok", priority="low")
    from bananas.worker_mode import PoolPlan, WorkerPlan

    worker = run_worker(app, WorkerPlan(mode="test", pools=(PoolPlan("hi", 2, ("high", "normal"), worker_id="hi-1"),)))
    for _ in range(3):
        app.enqueue("ok", priority="high")
    wait_for(lambda: worker.stats.completed == 3)
    wait_for(lambda: json.loads(cli("status", "--json")[1])["throughput_per_minute"] == 3, timeout=10)

    # When status is asked as JSON and as tables
    code, out, err = cli("status", "--json")
    code_text, text, _ = cli("status")

    # Then the JSON has the queue counts, the worker and the throughput of the last minute
    assert code == 0, err
    report = json.loads(out)
    by_queue = {row["queue"]: row for row in report["queues"]}
    assert by_queue["low"] == {"queue": "low", "priority": "low", "ready": 2, "scheduled": 0, "running": 0, "dead": 0}
    (record,) = report["workers"]
    assert record["id"] == worker.id and record["mode"] == "test"
    assert record["pools"][0]["pool_id"] == "hi-1" and record["pools"][0]["concurrency"] == 2
    assert report["throughput_per_minute"] == 3
    # and the tables show the same
    assert code_text == 0
    assert "Queues" in text and "Workers" in text and worker.id in text
    assert "throughput: 3 job(s) over the last minute, 1 live worker(s)" in text


def test_workers_lists_the_registry(cli, make_app, run_worker, wait_for):
    # Given no worker, then one
    make_app()
    assert cli("workers") == (0, "no live workers\n", "")
    app = make_app()
    worker = run_worker(app)
    wait_for(lambda: json.loads(cli("workers", "--json")[1]) != [])

    # When the registry is listed
    code, out, _ = cli("workers", "--json")
    code_text, text, _ = cli("workers")

    # Then it shows the live worker with its mode and pools
    (record,) = json.loads(out)
    assert (code, record["id"], record["mode"]) == (0, worker.id, "thin")
    assert code_text == 0 and worker.id in text and "thin" in text


def test_status_rejects_json_with_watch(cli):
    code, _, err = cli("status", "--json", "--watch")
    assert code == 2 and "--json and --watch" in err


async def test_extra_sections_are_added_after_the_workers(make_app):
    # Given a section source (like a future scheduler-leader section)
    app = make_app()
    broker = await app.broker()

    async def leader(_broker, _caps: BrokerCapabilities) -> Section:
        return Section("scheduler", "Scheduler", ("leader", "since"), (("host-1", "10s"),))

    # When status is gathered with it
    report = await gather(broker, app.capabilities(broker), [leader])

    # Then its rows come out under its key
    assert report.as_json()["scheduler"] == [{"leader": "host-1", "since": "10s"}]
    await app.aclose()


def test_status_shows_the_scheduler_leader_and_the_apps_periodic_jobs(cli, make_app, run_worker, wait_for, tmp_path):
    # Given an app with a periodic job whose worker (scheduler on) leads and has ticked
    (tmp_path / "beats.py").write_text(
        "from bananas import Bananas\n"
        "app = Bananas()\n"
        "app.periodic('beat', every='1s', job='noop')\n"
        "@app.job('noop')\n"
        "def noop() -> None:\n"
        "    return None\n"
    )
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        beats = importlib.import_module("beats")
    finally:
        sys.path.remove(str(tmp_path))
    worker = run_worker(beats.app)
    wait_for(lambda: json.loads(cli("status", "--json", "--app", "beats:app")[1])["periodic"][0]["last status"]
             == "enqueued", timeout=15)

    # When status is asked with the app
    code, out, err = cli("status", "--json", "--app", "beats:app")
    code_text, text, _ = cli("status", "--app", "beats:app")

    # Then the leader lease names this worker, and the periodic job has its trigger and last status
    assert code == 0, err
    report = json.loads(out)
    (leader,) = report["scheduler"]
    assert leader["leader"].startswith(worker.id) and leader["token"] >= 1
    (beat,) = report["periodic"]
    assert (beat["name"], beat["trigger"], beat["last status"]) == ("beat", "every 1s", "enqueued")
    assert code_text == 0 and "Scheduler" in text and "Periodic jobs" in text and "every 1s" in text
    sys.modules.pop("beats", None)


def test_status_lists_job_types_that_wait_for_a_worker_with_their_handler(cli, make_app, run_worker, wait_for):
    # Given a running worker with a handler for "ok" only, and jobs of a type it has no handler for
    app = make_app()

    @app.job("ok")
    def ok() -> None:
        return None

    run_worker(app)
    for _ in range(2):
        app.enqueue("added_in_the_next_release")
    done = app.enqueue("ok")
    wait_for(lambda: app.get_job(done.id).status.value == "completed")

    # When status is asked, then the waiting type is listed with its count and the age of its oldest job
    report = json.loads(cli("status", "--json")[1])
    (row,) = report["waiting_types"]
    assert (row["queue"], row["job_type"], row["ready"]) == ("normal", "added_in_the_next_release", 2)
    assert row["workers"] == 0  # no live worker takes that type from that queue
    assert row["oldest"].endswith("s")
    (record,) = report["workers"]
    assert record["job_types"] == ["", "ok"]  # what the live worker fetches: its handlers and the untyped jobs
    code, text, _ = cli("status")
    assert code == 0 and "Waiting job types" in text and "added_in_the_next_release" in text
    assert "job types with 0 workers wait for a worker that has their handler" in text
