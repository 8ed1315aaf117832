"""``bananas dlq`` and ``bananas queues`` on the kernel's memory:// broker (same process, the broker lives there).

The same commands on Redis, through ``python -m bananas.cli`` subprocesses, are tested in
plugins/bananas-redis/tests (test_redis_worker.py, test_redis_faults.py, test_redis_cli.py).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from bananas import Bananas, BrokerMisconfigured, BrokerUnavailable, Status
from bananas.broker import Envelope
from bananas.cli import main


@pytest.fixture
def cli(memory_url, tmp_path, monkeypatch, capsys):
    """``cli(*args)`` → (exit status, stdout, stderr) of ``bananas ARGS`` in-process, on ``memory_url``."""
    for key in ("BANANAS_BROKER", "REDIS_URL", "BANANAS_CONFIG", "BANANAS_SERIALIZER", "BANANAS_RESULT_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bananas.toml").write_text(f'broker = "{memory_url}"\n')

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        return done.value.code, out, err

    return run


def _dead(app: Bananas, run_worker: Any, wait_for: Any) -> None:
    """b1 (normal) and b2 (high) fail once with max_retries=0 and are dead letters."""

    @app.job("boom", max_retries=0)
    def boom(key):
        raise RuntimeError("kaput " + key)

    app.enqueue("boom", {"key": "b1"}, job_id="b1", max_retries=0)
    app.enqueue("boom", {"key": "b2"}, job_id="b2", priority="high", max_retries=0)
    worker = run_worker(app)
    wait_for(lambda: all(app.get_job(i).status is Status.DEAD for i in ("b1", "b2")))
    worker.request_stop()


def test_dlq_list_show_requeue_purge_on_memory(cli, make_app, run_worker, wait_for):
    # Given a worker that dead-lettered two failing jobs (no retries) with their traceback
    app = make_app()
    _dead(app, run_worker, wait_for)

    # When / Then: list shows both with their queue and reason
    code, out, err = cli("dlq", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "QUEUE", "DEAD_AT", "REASON"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"b1", "b2"}
    assert " high " in rows["b2"] and " normal " in rows["b1"]
    assert "failed after 1 attempt(s): RuntimeError: kaput b1" in rows["b1"]
    code, out, _ = cli("dlq", "--queue", "high", "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["b2"]

    # show decodes the job with the app's codec: fields, last error and traceback
    code, shown, err = cli("dlq", "show", "b1")
    assert code == 0, err
    assert "reason:      failed after 1 attempt(s): RuntimeError: kaput b1" in shown
    assert "name:        boom" in shown
    assert "last_error:  RuntimeError: kaput b1" in shown
    assert 'raise RuntimeError("kaput " + key)' in shown

    # user errors exit 2 with one line
    for args in (["show", "nope"], ["requeue"], ["requeue", "b1", "--all"], ["purge"], ["--queue", "zz", "list"]):
        code, out, err = cli("dlq", *args)
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1, err

    # requeue one id: it is ready again with fresh counters
    assert cli("dlq", "requeue", "b1")[:2] == (0, "requeued 1 job(s)\n")
    assert app.get_job("b1").status is Status.PENDING
    assert [line.split()[0] for line in cli("dlq", "list")[1].splitlines()[1:]] == ["b2"]

    # purge --yes drops the rest
    assert cli("dlq", "purge", "--yes")[:2] == (0, "purged 1 dead letter(s)\n")
    assert cli("dlq", "list")[1].strip() == "no dead letters"

    # requeue --all with nothing left
    assert cli("dlq", "requeue", "--all")[1].strip() == "requeued 0 job(s)"


@pytest.mark.parametrize("keep", [False, True])
def test_dlq_requeue_resets_the_attempt_count_unless_keep_attempts(cli, make_app, keep):
    # Given a dead job that ran 3 times (its body says attempts 3, its history has 3 runs)
    app = make_app()
    from bananas.attempts import add_attempt

    async def bury() -> None:
        broker = await app.broker()
        job, env = app.build("boom", {"key": "x"}, job_id="d1", max_retries=2)
        job.attempts = 3
        for n in (1, 2, 3):
            add_attempt(job, "w-1", "retried" if n < 3 else "dead", "RuntimeError: kaput")
        await broker.enqueue([env])
        [d] = await broker.fetch([env.queue], 1, 0)
        assert await broker.dead_letter(d, body=app.codec.encode(job), reason="failed after 3 attempt(s)")

    app.run_sync(bury)
    # When it is requeued (with or without --keep-attempts)
    args = ["dlq", "requeue", "d1"] + (["--keep-attempts"] if keep else [])
    assert cli(*args)[:2] == (0, "requeued 1 job(s)\n")
    # Then it is pending with its attempt count reset (or kept), and its history of earlier runs stays
    job = app.get_job("d1")
    assert job.status is Status.PENDING and job.attempts == (3 if keep else 0)
    assert job.payload == {"key": "x"} and len(job.extra["history"]) == 3
    assert cli("dlq", "list")[1].strip() == "no dead letters"
    # --all does the same for every dead letter
    app.run_sync(bury)
    assert cli("dlq", "requeue", "--all", *(["--keep-attempts"] if keep else []))[:2] == (0, "requeued 1 job(s)\n")
    assert app.get_job("d1").attempts == (3 if keep else 0)


def _env(job_id: str, queue: str = "q") -> Envelope:
    return Envelope(job_id, queue, b"not a job", None)


def test_dlq_list_says_how_many_letters_the_limit_hid_on_memory(cli, make_app):
    # Given 7 dead letters in "q" and 2 in "other"
    app = make_app()

    async def bury() -> None:
        broker = await app.broker()
        await broker.enqueue([_env(f"j{i}") for i in range(7)] + [_env(f"o{i}", "other") for i in range(2)])
        for queue, count in (("q", 7), ("other", 2)):
            for d in await broker.fetch([queue], count, 0):
                assert await broker.dead_letter(d, body=d.body, reason="boom")

    app.run_sync(bury)

    # When the list is cut by --limit, a last line says how many of how many (per cut queue)
    code, out, err = cli("dlq", "list", "--limit", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 + 3 + 2 + 1, out
    assert lines[-1] == "showing 3 of 7 dead letters in 'q' (use --limit N to see more)"

    # And when nothing was cut, no such line
    code, whole, err = cli("dlq", "list", "--limit", "7")
    assert code == 0, err
    assert len(whole.splitlines()) == 1 + 9
    assert "showing" not in whole


def test_queues_without_any_queue_says_so(cli):
    assert cli("queues") == (0, "no queues (nothing was enqueued yet)\n", "")
    assert cli("queues", "--json")[:2] == (0, "[]\n")


def test_queues_lists_ready_scheduled_running_and_dead_per_queue(cli, make_app, run_worker, wait_for):
    # Given two dead letters (high, normal), then three ready low jobs and one delayed normal job
    app = make_app()
    _dead(app, run_worker, wait_for)
    for n in range(3):
        app.enqueue("boom", {"key": f"l{n}"}, priority="low")
    app.enqueue("boom", {"key": "later"}, delay="1h")

    # When `bananas queues --json` runs
    code, out, err = cli("queues", "--json")

    # Then one row per known queue with the broker's depths, and the job types waiting in it
    assert code == 0, err
    rows = {row["queue"]: row for row in json.loads(out)}
    types = {queue: row.pop("types") for queue, row in rows.items()}
    assert rows == {
        "high": {"queue": "high", "ready": 0, "scheduled": 0, "running": 0, "dead": 1},
        "normal": {"queue": "normal", "ready": 0, "scheduled": 1, "running": 0, "dead": 1},
        "low": {"queue": "low", "ready": 3, "scheduled": 0, "running": 0, "dead": 0},
    }
    assert types["high"] == types["normal"] == []
    ((waiting),) = types["low"]
    assert (waiting["type"], waiting["ready"]) == ("boom", 3) and 0 <= waiting["oldest_age"] < 60

    # And the table says the same, with a header, then the waiting job types
    code, out, err = cli("queues")
    assert code == 0, err
    queues_part, types_part = out.split("\n\n")
    table = [line.split() for line in queues_part.splitlines()]
    assert table[0] == ["QUEUE", "READY", "SCHEDULED", "RUNNING", "DEAD"]
    assert sorted(table[1:]) == [["high", "0", "0", "0", "1"], ["low", "3", "0", "0", "0"],
                                 ["normal", "0", "1", "0", "1"]]
    lines = [line.split() for line in types_part.splitlines()]
    assert lines[0] == ["QUEUE", "JOB", "TYPE", "READY", "OLDEST"]
    assert lines[1][:3] == ["low", "boom", "3"] and lines[1][3].endswith("s")


def test_queues_and_dlq_take_a_broker_flag(cli, memory_url, make_app, tmp_path):
    # Given a config file pointing at another broker, and one job in memory_url
    (tmp_path / "bananas.toml").write_text('broker = "memory://nothing-here"\n')
    make_app().enqueue("work", {}, job_id="w1")

    # When / Then --broker wins over the configured one
    assert cli("queues")[1] == "no queues (nothing was enqueued yet)\n"
    code, out, err = cli("queues", "--broker", memory_url, "--json")
    assert code == 0, err
    ((row),) = json.loads(out)
    assert [(t["type"], t["ready"]) for t in row.pop("types")] == [("work", 1)]
    assert row == {"queue": "normal", "ready": 1, "scheduled": 0, "running": 0, "dead": 0}
    assert cli("dlq", "--broker", memory_url, "list")[1] == "no dead letters\n"


def test_dlq_and_queues_use_the_app_of_app_flag(cli, memory_url, tmp_path):
    # Given an app module on memory_url
    (tmp_path / "bananas.toml").unlink()
    (tmp_path / "adminapp.py").write_text(textwrap.dedent(f"""
        from bananas import Bananas

        app = Bananas(broker="{memory_url}", env={{}})
    """))

    # When / Then the commands read its broker
    assert cli("queues", "--app", "adminapp")[:2] == (0, "no queues (nothing was enqueued yet)\n")
    assert cli("dlq", "--app", "adminapp", "list")[:2] == (0, "no dead letters\n")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BrokerUnavailable("memory broker memory://x unavailable during connect: connection refused"), 1),
        (BrokerMisconfigured("memory broker memory://x unusable (connect): authentication failed"), 2),
    ],
    ids=["unavailable-exits-1", "misconfigured-exits-2"],
)
def test_a_broker_that_cannot_be_used_is_one_line_and_its_exit_status_says_whether_to_retry(
    cli, monkeypatch, error, status
):
    # Given a broker whose connect fails: unreachable (may work later) or misconfigured (retrying cannot help)
    from bananas.builtin.memory_broker import MemoryBroker

    async def connect(self: MemoryBroker) -> None:
        raise error

    monkeypatch.setattr(MemoryBroker, "connect", connect)

    # When `bananas queues` runs / Then one line naming the cause; exit 1, or 2 like any configuration error
    code, out, err = cli("queues")
    assert (code, out, err) == (status, "", f"Error: {error}\n")


def test_bananas_cancel_says_what_it_did_and_exits_by_outcome(cli, make_app):
    # Given a pending job and a scheduled one
    app = make_app()
    pending = app.enqueue("anything", {"n": 1})
    scheduled = app.enqueue("anything", {"n": 2}, delay="1h")

    # When / Then: each is cancelled with a line saying what it was; bananas job shows the status
    assert cli("cancel", pending.id)[:2] == (0, f"job {pending.id} cancelled (it was pending)\n")
    assert cli("cancel", scheduled.id)[:2] == (0, f"job {scheduled.id} cancelled (it was scheduled)\n")
    code, out, err = cli("job", pending.id)
    assert code == 0 and "status:      cancelled" in out, err

    # A finished job is a no-op: exit 1 with one line on stderr; an unknown id exits 2 with one line
    code, out, err = cli("cancel", pending.id)
    assert (code, out, err) == (1, "", f"job {pending.id} is already cancelled: nothing to cancel\n")
    code, out, err = cli("cancel", "no-such-id")
    assert code == 2
    assert err.strip() == "Error: no job with id 'no-such-id' (never enqueued here, or its record expired)"
