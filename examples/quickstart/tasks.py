"""The quickstart app: one sync handler and one async handler.

From this folder, with a Redis server on localhost:6379:

    bananas worker --app tasks:app      # terminal 1: run a worker
    python tasks.py                     # terminal 2: enqueue a few jobs
"""

from __future__ import annotations

import asyncio

from loguru import logger

from bananas import Bananas

app = Bananas()  # reads bananas.toml from the working directory


@app.job("add", max_retries=2, timeout="10s")
def add(a: int, b: int) -> int:
    """A sync handler: runs in a worker thread; a timeout interrupts the thread."""
    logger.info("add({a}, {b}) = {total}", a=a, b=b, total=a + b)
    return a + b


@app.job("greet", priority="high")
async def greet(name: str) -> str:
    """An async handler: runs on the worker's event loop; a timeout cancels it."""
    await asyncio.sleep(0.1)
    logger.info("hello, {name}", name=name)
    return f"hello, {name}"


if __name__ == "__main__":
    handles = [
        *(app.enqueue("add", {"a": i, "b": 10}) for i in range(3)),
        app.enqueue("greet", {"name": "world"}),  # high priority: runs before waiting normal jobs
        app.enqueue("greet", {"name": "later"}, delay="5s"),  # scheduled, moved to its queue in 5 s
        app.enqueue("add", {"a": 1}),  # missing "b": fails, retries twice with backoff, then is dead
    ]
    for handle in handles:
        print(handle.id, handle.job.name, handle.job.payload)
    app.close()
