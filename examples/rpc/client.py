"""The RPC example's client: a producer-only process (it imports no handler code).

    python client.py            # with `bananas worker --app worker:app` running in another terminal
"""

from __future__ import annotations

import asyncio
import time

from bananas import AsyncClient, Client, JobFailed, ResultTimeout


def blocking_calls() -> None:
    with Client() as client:  # broker and result backend from bananas.toml; Client("redis://…") works too
        # RPC style: submit and wait for the result
        print("add(2, 3) =", client.submit_and_wait("add", {"a": 2, "b": 3}, timeout=30))

        # Fire now, fetch later
        job = client.submit_job("word_count", {"text": "to be or not to be"}, priority="high")
        print("word_count:", client.get_result(job.id, wait=10))
        info = client.get_job(job.id)
        print(f"job {info.id}: {info.status.value}, {info.attempts} attempt(s), queue {info.queue}")

        # A remote failure comes back as JobFailed with the remote type, message and traceback
        try:
            client.submit_and_wait("divide", {"a": 1, "b": 0}, timeout=30, max_retries=0)
        except JobFailed as exc:
            print(f"divide failed remotely: {exc.error_type}: {exc.message}")

        # A wait that times out does not stop the job
        job = client.submit_job("slow", {"seconds": 1.5})
        try:
            client.get_result(job.id, wait=0.5)
        except ResultTimeout:
            print("slow: not yet after 0.5s; the job keeps running")
        print("slow:", client.get_result(job.id, wait=10))


async def concurrent_calls() -> None:
    async with AsyncClient() as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(client.submit_and_wait("add", {"a": n, "b": n}, timeout=30) for n in range(100))
        )
        assert results == [2 * n for n in range(100)]
        print(f"100 concurrent RPC calls in {time.perf_counter() - started:.2f}s")
        value = await client.submit_and_wait("flaky", {"attempt_key": "k1"}, timeout=60, max_retries=10)
        print("flaky (retried until it worked):", value)


if __name__ == "__main__":
    blocking_calls()
    asyncio.run(concurrent_calls())
