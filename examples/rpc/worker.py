"""The RPC example's worker: the handlers, and nothing else (clients never import this module).

    bananas worker --app worker:app
"""

from __future__ import annotations

import asyncio
import random

from bananas import Bananas

app = Bananas()  # reads bananas.toml from the working directory


@app.job("add")
def add(a: int, b: int) -> int:
    """A sync handler: runs in a worker thread."""
    return a + b


@app.job("word_count", priority="high")
async def word_count(text: str) -> dict[str, int]:
    """An async handler returning a JSON object."""
    await asyncio.sleep(0.05)
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts


@app.job("divide")
def divide(a: float, b: float) -> float:
    """Fails for b = 0: the client gets JobFailed with the remote ZeroDivisionError and its traceback."""
    return a / b


@app.job("flaky")
def flaky(attempt_key: str) -> str:
    """Fails at random at first: retried with backoff, and the waiting client only sees the final result."""
    if random.random() < 0.5:
        raise ConnectionError(f"upstream hiccup for {attempt_key}")
    return f"done ({attempt_key})"


@app.job("slow")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}s"
