"""The attempt history of a job: one entry per run (worker, start, end, outcome, error), kept in the job's body.

Stored under :attr:`Job.extra` ``["history"]`` (every serializer carries ``extra`` unchanged, so no wire format
changes): the worker appends an entry whenever it writes the job back — a retry, the dead letters, a cancelled run.
A completed job's body is not rewritten by ``ack``; its last, successful run is added when the job is read
(:func:`completed_attempt`, from the broker's record, with the worker id kept beside the stored result). The
history keeps the last :data:`MAX_HISTORY` runs.
"""

from __future__ import annotations

import time
from typing import Any

from bananas.job import Job

__all__ = ["HISTORY_KEY", "MAX_HISTORY", "add_attempt", "attempts_of", "completed_attempt"]

HISTORY_KEY = "history"
MAX_HISTORY = 20
"""Runs kept per job (the oldest go first); ``attempt`` numbers stay those of the runs."""


def attempts_of(job: Job) -> list[dict[str, Any]]:
    """The job's attempt history, oldest first (a list of dicts; empty when none was recorded)."""
    history = job.extra.get(HISTORY_KEY)
    return [dict(entry) for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []


def add_attempt(job: Job, worker: str | None, outcome: str, error: str | None = None) -> None:
    """Append this run of ``job`` (``attempts``, ``started_at``, ``finished_at``) with ``outcome`` (``retried``,
    ``dead``) to its history, keeping the last :data:`MAX_HISTORY`."""
    entry: dict[str, Any] = {
        "attempt": job.attempts,
        "worker": worker,
        "started_at": job.started_at,
        "finished_at": job.finished_at or time.time(),
        "outcome": outcome,
    }
    if error:
        entry["error"] = error
    history = attempts_of(job)
    history.append(entry)
    job.extra[HISTORY_KEY] = history[-MAX_HISTORY:]


def completed_attempt(job: Job, started_at: float | None, finished_at: float, worker: str | None = None) -> None:
    """Add the successful last run of a completed job (read from its broker record: ``ack`` stores nothing but the
    state). ``worker`` comes from the job's stored result (the worker stores its id with it); ``None`` when no
    result was kept."""
    history = attempts_of(job)
    if history and history[-1].get("attempt") == job.attempts:
        return
    history.append({"attempt": job.attempts, "worker": worker, "started_at": started_at, "finished_at": finished_at,
                    "outcome": "completed"})
    job.extra[HISTORY_KEY] = history[-MAX_HISTORY:]
