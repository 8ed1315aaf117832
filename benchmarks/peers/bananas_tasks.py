"""Bananas app for the peers' harness (``../shared/bench/peers/common.py`` beside the repository): Redis broker on
the harness's port, async no-op and latency jobs (one ``INCR`` / ``RPUSH`` each on an async client, like the other
async peers), no result backend. The worker runs it as ``bananas worker --app bananas_tasks``."""

import os

from common import URL, ajob_lat, ajob_noop, async_conn

from bananas import Bananas

PLUGINS = "bananas-redis"
app = Bananas(broker=URL, env={**os.environ, "BANANAS_LOAD_PLUGINS": PLUGINS})

_r = None


def _conn():  # noqa: ANN202
    global _r
    if _r is None:
        _r = async_conn()
    return _r


@app.job("noop")
async def noop() -> None:
    await ajob_noop(_conn())


@app.job("lat")
async def lat(ts: float) -> None:
    await ajob_lat(_conn(), ts)
