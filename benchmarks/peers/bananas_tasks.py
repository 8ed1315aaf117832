"""Bananas app for the peers' harness (``../shared/bench/peers/common.py`` beside the repository): Redis broker on
the harness's port, no-op and latency jobs doing one ``INCR`` / ``RPUSH`` each, like the peers. The worker runs it
as ``bananas worker --app bananas_tasks``.

``BANANAS_BENCH_HANDLER`` picks the handler kind, as the peers differ: ``sync`` (a synchronous redis-py client, like
Celery, Dramatiq, RQ and Huey) or ``async`` (default; an awaited ``redis.asyncio`` client, like arq, SAQ and Taskiq).
The producer only enqueues by name, so it needs no setting."""

import os

from common import URL, ajob_lat, ajob_noop, async_conn, job_lat, job_noop

from bananas import Bananas

PLUGINS = "bananas-redis"
HANDLER = os.environ.get("BANANAS_BENCH_HANDLER", "async")
app = Bananas(broker=URL, env={**os.environ, "BANANAS_LOAD_PLUGINS": PLUGINS})

_r = None


def _conn():  # noqa: ANN202
    global _r
    if _r is None:
        _r = async_conn()
    return _r


if HANDLER == "sync":

    @app.job("noop")
    def noop() -> None:
        job_noop()

    @app.job("lat")
    def lat(ts: float) -> None:
        job_lat(ts)

else:

    @app.job("noop")
    async def anoop() -> None:
        await ajob_noop(_conn())

    @app.job("lat")
    async def alat(ts: float) -> None:
        await ajob_lat(_conn(), ts)
