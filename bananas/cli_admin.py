"""``bananas dlq list|show|requeue|purge`` and ``bananas queues``: operating a queue from the command line.

Part of the kernel CLI (:mod:`bananas.cli` adds both commands). They use only the :class:`bananas.broker.Broker`
protocol (``known_queues``, ``depths``, ``dead_letters``, ``lookup``, ``requeue_dead``, ``purge_dead``), so they work
for every broker, ``memory://`` included (in-process only: a memory broker lives in one process). The app comes from
the configuration (``Bananas()``), or from ``--app`` for an app module; dead-letter bodies are decoded with its codec.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from bananas.broker import Broker, DeadLetter, Envelope, JobRecord, capabilities
from bananas.errors import SerializationError, UsageError
from bananas.job import Status

__all__ = ["dlq", "queues"]

_REASON_WIDTH = 70


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class _Admin:
    """The app and its broker for one ``dlq`` or ``queues`` command (built lazily, closed by the caller)."""

    def __init__(
        self, config: str | None, app_spec: str | None, queues: Sequence[str] = (), broker: str | None = None
    ) -> None:
        self.config, self.app_spec, self.wanted, self.broker_url = config, app_spec, tuple(queues), broker
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            if self.app_spec:
                from bananas.loading import load_app

                app = load_app(self.app_spec)
                if self.broker_url is None:
                    self._app = app
                    return app
                from bananas.app import Bananas

                self._app = Bananas(config=self.config, plugins=app.extra_plugins, **self._broker_override())
                self._app.handlers.update(app.handlers)
                self._app.schedules.adopt(app.schedules)
            else:
                from bananas.app import Bananas

                self._app = Bananas(config=self.config, **self._broker_override())
        return self._app

    def _broker_override(self) -> dict[str, Any]:
        if self.broker_url is None:
            return {}
        return {"overrides": {"broker": self.broker_url}, "override_sources": {"broker": "flag --broker"}}

    def run(self, work: Callable[[Broker], Any]) -> Any:
        """Run ``await work(broker)`` on the app's connected broker."""

        async def go() -> Any:
            return await work(await self.app.broker())

        return self.app.run_sync(go)

    async def queues(self, broker: Broker) -> list[str]:
        known = await broker.known_queues()
        if not self.wanted:
            return known
        unknown = [q for q in self.wanted if q not in known]
        if unknown:
            raise UsageError(
                f"--queue {unknown[0]}: no such queue; known: {', '.join(known) or 'none (nothing was enqueued yet)'}"
            )
        return list(self.wanted)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


@click.group(name="dlq")
@click.option("--queue", "queues", multiple=True, metavar="NAME", help="Only this queue (repeatable; default: all).")
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", help="Use this app's configuration and codec.")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def dlq(ctx: click.Context, queues: tuple[str, ...], app_spec: str | None, broker: str | None) -> None:
    """Inspect and manage dead letters (jobs that will not be tried again)."""
    ctx.ensure_object(dict)
    state = _Admin(ctx.obj.get("config"), app_spec, queues, broker)
    ctx.obj["dlq"] = state
    ctx.call_on_close(state.close)


def _state(ctx: click.Context) -> _Admin:
    return ctx.obj["dlq"]


@dlq.command(name="list")
@click.option("--limit", default=100, show_default=True, help="Newest dead letters per queue.")
@click.pass_context
def list_(ctx: click.Context, limit: int) -> None:
    """List dead letters: id, queue, reason and when the job died (newest first).

    When ``--limit`` cuts a queue's list, a last line says how many of how many are shown."""
    state = _state(ctx)

    async def work(broker: Broker) -> tuple[list[DeadLetter], list[tuple[str, int, int]]]:
        out: list[DeadLetter] = []
        cut: list[tuple[str, int, int]] = []  # (queue, shown, total) of every queue the limit cut
        for queue in await state.queues(broker):
            letters = await broker.dead_letters(queue, limit)
            out += letters
            if len(letters) >= limit:  # maybe cut: the dead count of depths() says by how much
                total = (await broker.depths([queue]))[queue].dead
                if total > len(letters):
                    cut.append((queue, len(letters), total))
        return sorted(out, key=lambda d: d.dead_at, reverse=True), cut

    letters, cut = state.run(work)
    if not letters:
        click.echo("no dead letters")
        return
    rows = [("ID", "QUEUE", "DEAD_AT", "REASON")]
    rows += [(d.id, d.queue, _when(d.dead_at), _one_line(d.reason, _REASON_WIDTH)) for d in letters]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    for queue, shown, total in cut:
        click.echo(f"showing {shown} of {total} dead letters in {queue!r} (use --limit N to see more)")


@dlq.command()
@click.argument("job_id")
@click.pass_context
def show(ctx: click.Context, job_id: str) -> None:
    """Show one dead letter: the reason and the decoded job, with its last error and traceback."""
    state = _state(ctx)

    async def work(broker: Broker) -> JobRecord | None:
        return await broker.lookup(job_id)

    record = state.run(work)
    if record is None or record.state != "dead":
        now = "unknown or expired" if record is None else f"it is {record.state}"
        raise UsageError(f"no dead letter with id {job_id!r} ({now})")
    if state.wanted and record.queue not in state.wanted:
        wanted = ", ".join(state.wanted)
        raise UsageError(f"dead letter {job_id!r} is in queue {record.queue!r}, not in --queue {wanted}")
    click.echo(f"id:          {record.id}")
    click.echo(f"queue:       {record.queue}")
    click.echo(f"dead_at:     {_when(record.updated_at)}")
    click.echo(f"reason:      {record.reason or ''}")
    click.echo(f"deliveries:  {record.deliveries} (crashes: {record.crashes})")
    try:
        job = state.app.codec.decode(record.body)
    except SerializationError as exc:
        click.echo(f"body:        cannot be decoded ({exc}); {len(record.body)} bytes: {record.body[:200]!r}")
        return
    fields = job.to_dict()
    tb = fields.pop("traceback", None)
    for key in ("name", "priority", "attempts", "max_retries", "timeout", "payload", "headers", "last_error"):
        value = fields.get(key)
        text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        click.echo(f"{key + ':':<13}{text}")
    for key in ("created_at", "enqueued_at", "started_at", "finished_at"):
        if fields.get(key):
            click.echo(f"{key + ':':<13}{_when(fields[key])}")
    click.echo("traceback:")
    click.echo("    " + (tb or "(none)").rstrip().replace("\n", "\n    "))


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead letter of the selected queues.")
@click.option("--keep-attempts", is_flag=True,
              help="Keep each job's attempt count (default: reset it to 0, so it gets its full max_retries again).")
@click.pass_context
def requeue(ctx: click.Context, ids: tuple[str, ...], everything: bool, keep_attempts: bool) -> None:
    """Put dead jobs (IDS, or --all) back on their queue with fresh counters: the broker's delivery and crash
    counts start again, and so does the job's attempt count unless --keep-attempts (its attempt history stays)."""
    if bool(ids) == everything:
        raise UsageError("requeue: give job ids or --all (not both)")
    state = _state(ctx)

    async def work(broker: Broker) -> int:
        queues = await state.queues(broker)
        if everything:
            if keep_attempts:
                return sum([await broker.requeue_dead(queue) for queue in queues])
            total = 0
            for queue in queues:
                depth = (await broker.depths([queue]))[queue].dead
                letters = await broker.dead_letters(queue, max(depth, 1) * 2)
                total += await _requeue_fresh(state.app.codec, broker, queue, [d.id for d in letters],
                                              {d.id: d.body for d in letters})
            return total
        by_queue: dict[str, list[str]] = {}
        bodies: dict[str, bytes] = {}
        for job_id in dict.fromkeys(ids):
            record = await broker.lookup(job_id)
            if record is None or record.state != "dead" or record.queue not in queues:
                where = " in the selected queues" if state.wanted else ""
                raise UsageError(f"no dead letter with id {job_id!r}{where}")
            by_queue.setdefault(record.queue, []).append(job_id)
            bodies[job_id] = record.body
        if keep_attempts:
            return sum([await broker.requeue_dead(queue, found) for queue, found in by_queue.items()])
        return sum([await _requeue_fresh(state.app.codec, broker, queue, found, bodies)
                    for queue, found in by_queue.items()])

    click.echo(f"requeued {state.run(work)} job(s)")


async def _requeue_fresh(codec: Any, broker: Broker, queue: str, ids: list[str], bodies: dict[str, bytes]) -> int:
    """Requeue dead jobs with their attempt count reset: each job is enqueued anew on ``queue`` with a rewritten body
    (attempts 0, status pending; enqueueing a dead id replaces its dead letter). A body that cannot be decoded is
    requeued as it is (``requeue_dead``)."""
    envelopes: list[Envelope] = []
    as_is: list[str] = []
    for job_id in ids:
        try:
            job = codec.decode(bodies[job_id])
        except SerializationError:
            as_is.append(job_id)
            continue
        job.attempts = 0
        job.status = Status.PENDING
        job.scheduled_at = job.started_at = job.finished_at = None
        envelopes.append(Envelope(job_id, queue, codec.encode(job), job_type=job.name))  # typed fetches select on it
    if envelopes:
        await broker.enqueue(envelopes)
    return len(envelopes) + (await broker.requeue_dead(queue, as_is) if as_is else 0)


@dlq.command()
@click.option("--yes", is_flag=True, help="Really delete them.")
@click.pass_context
def purge(ctx: click.Context, yes: bool) -> None:
    """Delete every dead letter of the selected queues (needs --yes)."""
    if not yes:
        raise UsageError("purge deletes dead letters for good; add --yes to confirm")
    state = _state(ctx)

    async def work(broker: Broker) -> int:
        return sum([await broker.purge_dead(queue) for queue in await state.queues(broker)])

    click.echo(f"purged {state.run(work)} dead letter(s)")


COLUMNS = ("ready", "scheduled", "running", "dead")


def _age(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``: how long the oldest job of a type has been waiting."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


async def waiting_types(
    broker: Broker, queues: Sequence[str], ready: dict[str, int]
) -> dict[str, list[dict[str, Any]]]:
    """Per queue with ready jobs: the job types waiting there, oldest first, as ``{type, ready, oldest_age}`` rows
    (``oldest_age`` in seconds); empty when the broker lacks the ``ready_types`` capability."""
    listing = capabilities(broker).ready_types
    if listing is None:
        return {}
    now = broker.options.clock()
    out: dict[str, list[dict[str, Any]]] = {}
    for queue in queues:
        if ready.get(queue):
            out[queue] = [{"type": r.job_type, "ready": r.ready,
                           "oldest_age": None if r.oldest_at is None else round(max(0.0, now - r.oldest_at), 1)}
                          for r in await listing(queue)]
    return out


@click.command(name="queues")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of {queue, ready, ...}.")
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", help="Use this app's configuration.")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def queues(ctx: click.Context, as_json: bool, app_spec: str | None, broker: str | None) -> None:
    """List every known queue with its ready, scheduled, running and dead job counts, then the job types waiting in
    each (count, age of the oldest)."""
    ctx.ensure_object(dict)
    state = _Admin(ctx.obj.get("config"), app_spec, broker=broker)

    async def work(connected: Broker) -> list[dict[str, Any]]:
        known = await connected.known_queues()
        depths = await connected.depths(known) if known else {}
        rows = []
        waiting = await waiting_types(connected, known, {q: getattr(depths.get(q), "ready", 0) for q in known})
        for queue in known:
            depth = depths.get(queue)
            rows.append({"queue": queue, **{name: getattr(depth, name, 0) for name in COLUMNS},
                         "types": waiting.get(queue, [])})
        return rows

    try:
        rows = state.run(work)
    finally:
        state.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no queues (nothing was enqueued yet)")
        return
    table = [("QUEUE", *(name.upper() for name in COLUMNS))]
    table += [(row["queue"], *(str(row[name]) for name in COLUMNS)) for row in rows]
    _echo_table(table)
    types = [(row["queue"], t["type"] or "(untyped)", str(t["ready"]),
              "" if t["oldest_age"] is None else _age(t["oldest_age"])) for row in rows for t in row["types"]]
    if types:  # which job types wait where: a type no running worker has a handler for stays here
        click.echo("")
        _echo_table([("QUEUE", "JOB TYPE", "READY", "OLDEST"), *types])


def _echo_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True)]
        click.echo("  ".join(cells).rstrip())
