"""``bananas status`` and ``bananas workers``: the state of a deployment at a glance.

``bananas status`` shows the queues (ready / scheduled / running / dead per queue, with the priority a queue name
carries), the live workers from the broker's worker registry (mode, pools, jobs running, utilization) and the
throughput over the last minute (the sum of what every live worker settled in its last 60 s). ``--watch`` redraws
it in place, ``--json`` prints it for scripts. ``bananas workers`` lists the registry alone.

Both need the broker's ``admin`` capability for the queue list and its ``worker_registry`` capability for the
workers (a broker without the registry shows no workers and says why). Then the scheduler: who holds the leader
lease (``schedules`` capability) and the app's periodic jobs with their next and last runs (pass ``--app`` to see
yours). More sections plug in through :data:`EXTRA_SECTIONS`: each is an async function of the connected broker and
its capabilities that returns a :class:`Section`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import click

from bananas.broker import Broker, BrokerCapabilities, require_admin
from bananas.cli_admin import _Admin, _age, waiting_types
from bananas.metrics.logline import format_duration
from bananas.metrics.registry import WorkerRecord, decode_records

__all__ = ["EXTRA_SECTIONS", "Section", "StatusReport", "gather", "scheduler_sections", "status", "workers"]

STATES = ("ready", "scheduled", "running", "dead")


@attrs.frozen
class Section:
    """One more table of ``bananas status``: a title, column names and rows (shown in order; ``--json`` puts
    ``{column: value}`` rows under ``key``)."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...] = ()
    note: str = ""


SectionSource = Callable[[Broker, BrokerCapabilities], Awaitable[Section]]
"""``await source(broker, caps)`` → a :class:`Section`."""

EXTRA_SECTIONS: list[SectionSource] = []
"""Sections added after the queues, workers and the scheduler's (append a :data:`SectionSource`)."""


@attrs.frozen
class StatusReport:
    """What ``bananas status`` shows."""

    queues: tuple[dict[str, Any], ...]
    workers: tuple[WorkerRecord, ...]
    registry: bool
    sections: tuple[Section, ...] = ()
    taken_at: float = attrs.field(factory=time.time)

    @property
    def throughput(self) -> int:
        """Jobs the live workers settled over the last minute."""
        return sum(record.throughput for record in self.workers)

    def as_json(self) -> dict[str, Any]:
        return {
            "queues": list(self.queues),
            "workers": [record.as_dict() for record in self.workers] if self.registry else None,
            "throughput_per_minute": self.throughput if self.registry else None,
            **{s.key: [dict(zip(s.columns, row, strict=True)) for row in s.rows] for s in self.sections},
            "taken_at": self.taken_at,
        }


def _priority(queue: str) -> str:
    last = queue.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    return last if last in ("high", "normal", "low") else ""


async def list_workers(broker: Broker, caps: BrokerCapabilities) -> list[WorkerRecord] | None:
    """The live workers, or ``None`` when the broker has no ``worker_registry`` capability."""
    if caps.worker_registry is None:
        return None
    return decode_records(await caps.worker_registry.list_workers())


async def waiting_section(broker: Broker, caps: BrokerCapabilities) -> Section:
    """The job types waiting in each queue, with their count, the age of the oldest (capability ``ready_types``) and
    how many live workers take that type from that queue (``?`` without a worker registry): a type no running worker
    has a handler for waits here, with 0 workers, instead of being dead-lettered."""
    if caps.ready_types is None or caps.admin is None:
        return Section("waiting_types", "Waiting job types", ("queue", "job_type", "ready", "oldest", "workers"),
                       note="waiting job types: unknown (the broker has no 'ready_types' capability)")
    known = await caps.admin.known_queues()
    depths = await broker.depths(known) if known else {}
    waiting = await waiting_types(broker, known, {q: d.ready for q, d in depths.items()})
    records = await list_workers(broker, caps)

    def takers(queue: str, job_type: str) -> int | str:
        return "?" if records is None else sum(1 for r in records if r.takes(queue, job_type))

    rows = tuple((queue, t["type"] or "(untyped)", t["ready"], "" if t["oldest_age"] is None else _age(t["oldest_age"]),
                  takers(queue, t["type"])) for queue in known for t in waiting.get(queue, []))
    note = ""
    if any(row[4] == 0 for row in rows):
        note = ("job types with 0 workers wait for a worker that has their handler (deploy one, or add the type to a "
                "job-specialized worker's WORKER_JOB_TYPES)")
    return Section("waiting_types", "Waiting job types", ("queue", "job_type", "ready", "oldest", "workers"), rows,
                   note)


async def gather(broker: Broker, caps: BrokerCapabilities, extra: Sequence[SectionSource] = ()) -> StatusReport:
    """Read everything ``bananas status`` shows (``extra``: more sections, see :data:`EXTRA_SECTIONS`)."""
    admin = require_admin(broker, caps, "bananas status")
    known = await admin.known_queues()
    depths = await broker.depths(known) if known else {}
    queues = tuple({"queue": q, "priority": _priority(q), **{s: getattr(depths.get(q), s, 0) for s in STATES}}
                   for q in known)
    records = await list_workers(broker, caps)
    sections = tuple([await source(broker, caps) for source in extra])
    return StatusReport(queues, tuple(records or ()), records is not None, sections)


# -- rendering ------------------------------------------------------------------------------------------------------
def _percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def _pools(record: WorkerRecord) -> str:
    return ", ".join(f"{p.pool_id}×{p.concurrency} [{','.join(p.queues)}] {_percent(p.utilization)}"
                     for p in record.pools) or "none"


def workers_table(records: Sequence[WorkerRecord], now: float) -> Any:
    from rich.table import Table

    table = Table(title="Workers", title_justify="left")
    for name in ("ID", "MODE", "POOLS", "RUNNING", "UTIL", "1M", "UPTIME", "VERSION"):
        table.add_column(name, justify="right" if name in ("RUNNING", "UTIL", "1M") else "left")
    for r in records:
        table.add_row(r.id, r.mode, _pools(r), str(r.jobs_running), _percent(r.utilization), str(r.throughput),
                      format_duration(now - r.started_at), r.version)
    return table


def render_status(report: StatusReport) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    queues = Table(title="Queues", title_justify="left")
    for name in ("QUEUE", "PRIORITY", *(s.upper() for s in STATES)):
        queues.add_column(name, justify="left" if name in ("QUEUE", "PRIORITY") else "right")
    for row in report.queues:
        queues.add_row(row["queue"], row["priority"], *(str(row[s]) for s in STATES))
    parts: list[Any] = [queues if report.queues else Text("no queues (nothing was enqueued yet)")]
    if report.registry:
        parts.append(workers_table(report.workers, report.taken_at) if report.workers
                     else Text("no live workers"))
        parts.append(Text(f"throughput: {report.throughput} job(s) over the last minute, "
                          f"{len(report.workers)} live worker(s)"))
    else:
        parts.append(Text("workers: unknown (the broker has no 'worker_registry' capability)"))
    for section in report.sections:
        table = Table(title=section.title, title_justify="left")
        for name in section.columns:
            table.add_column(name.upper())
        for row in section.rows:
            table.add_row(*(str(cell) for cell in row))
        parts.append(table)
        if section.note:
            parts.append(Text(section.note))
    return Group(*parts)


# -- commands -------------------------------------------------------------------------------------------------------
def scheduler_sections(app: Any) -> list[SectionSource]:
    """The scheduler's leadership and the app's periodic jobs (``bananas periodic list`` in short), as two sections."""
    from bananas.periodic.status import schedule_rows

    found: dict[str, Any] = {}

    async def rows() -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
        if "rows" not in found:
            found["rows"] = await schedule_rows(app)
        return found["rows"]  # type: ignore[no-any-return]

    def when(moment: float | None, now: float) -> str:
        return "-" if moment is None else f"in {format_duration(moment - now)}" if moment >= now else (
            f"{format_duration(now - moment)} ago")

    async def leader(broker: Broker, caps: BrokerCapabilities) -> Section:
        _, lease, capability = await rows()
        now = broker.options.clock()
        if not capability:
            note = f"the broker ({type(broker).__name__}) has no 'schedules' capability: no election, no periodic jobs"
            return Section("scheduler", "Scheduler", ("leader", "token", "lease"), (), note)
        if lease is None:
            return Section("scheduler", "Scheduler", ("leader", "token", "lease"), (),
                           "no scheduler leads now (none runs, or a hand-over is under way)")
        return Section("scheduler", "Scheduler", ("leader", "token", "lease"),
                       ((lease["holder"], lease["token"], f"expires {when(lease['expires_at'], now)}"),))

    async def periodic(broker: Broker, caps: BrokerCapabilities) -> Section:
        listed, _, _ = await rows()
        now = broker.options.clock()
        table = tuple((r["name"], r["trigger"], when(r["next_run"], now), when(r["last_run"], now), r["last_status"])
                      for r in listed)
        return Section("periodic", "Periodic jobs", ("name", "trigger", "next run", "last run", "last status"), table,
                       "" if table else "no periodic jobs in this app (pass --app to see yours)")

    return [leader, periodic]


def _state(ctx: click.Context, app_spec: str | None, broker: str | None) -> _Admin:
    ctx.ensure_object(dict)
    return _Admin(ctx.obj.get("config"), app_spec, broker=broker)


@click.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON object).")
@click.option("--watch", is_flag=True, help="Redraw in place every --interval seconds until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between redraws.")
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", help="Use this app's configuration.")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, interval: float, app_spec: str | None,
           broker: str | None) -> None:
    """Queues (ready/scheduled/running/dead), live workers and the throughput of the last minute."""
    if as_json and watch:
        raise click.UsageError("--json and --watch do not go together (use --json in a loop for scripts)")
    state = _state(ctx, app_spec, broker)

    async def work(connected: Broker) -> StatusReport:
        return await gather(connected, state.app.capabilities(connected),
                            [waiting_section, *scheduler_sections(state.app), *EXTRA_SECTIONS])

    try:
        if as_json:
            click.echo(json.dumps(state.run(work).as_json(), indent=2))
            return
        from rich.console import Console

        console = Console()
        if not watch:
            console.print(render_status(state.run(work)))
            return
        from rich.live import Live

        try:
            with Live(render_status(state.run(work)), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(render_status(state.run(work)), refresh=True)
        except KeyboardInterrupt:
            return
    finally:
        state.close()


@click.command(name="workers")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of worker records.")
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", help="Use this app's configuration.")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def workers(ctx: click.Context, as_json: bool, app_spec: str | None, broker: str | None) -> None:
    """List the live workers of the broker's worker registry (mode, pools, jobs running, utilization)."""
    state = _state(ctx, app_spec, broker)

    async def work(connected: Broker) -> list[WorkerRecord] | None:
        return await list_workers(connected, state.app.capabilities(connected))

    try:
        records = state.run(work)
    finally:
        state.close()
    if records is None:
        from bananas.errors import UsageError

        raise UsageError("bananas workers needs the broker capability 'worker_registry' (publish_worker, "
                         "remove_worker, list_workers), which this broker does not implement")
    if as_json:
        click.echo(json.dumps([record.as_dict() for record in records], indent=2))
        return
    if not records:
        click.echo("no live workers")
        return
    from rich.console import Console

    Console().print(workers_table(records, time.time()))
