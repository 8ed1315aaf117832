"""The Redis side of the ``schedules`` capability beyond the conformance kit: one hash tag for every periodic key
(cluster-safe), and the script reloaded after Redis forgot it."""

from __future__ import annotations

import pytest
import redis


@pytest.mark.asyncio
async def test_every_periodic_key_shares_one_hash_tag(make_broker, redis_url, prefix):
    # Given a leader that claimed a tick and wrote a state
    broker = await make_broker()
    token = await broker.acquire_leader("a", 10.0)
    assert token is not None
    assert await broker.claim_tick("s", 60.0, token) and await broker.save_schedule_state("s", "{}", token)

    # When the keys are listed
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = sorted(client.keys(f"*{prefix}:periodic*"))
    client.close()

    # Then there are the lease, its token counter, the tick guard and the states, all under {prefix:periodic}
    tag = "{" + prefix + ":periodic}"
    assert keys == sorted(f"{tag}:{name}" for name in ("leader", "leader-seq", "ticks", "states"))


@pytest.mark.asyncio
async def test_the_periodic_script_is_loaded_again_after_a_script_flush(make_broker, redis_url):
    # Given a leader, and Redis that lost its scripts (a restart, SCRIPT FLUSH)
    broker = await make_broker()
    token = await broker.acquire_leader("a", 10.0)
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    client.close()

    # When the leader renews
    renewed = await broker.renew_leader("a", token, 10.0)

    # Then the call loaded the script again and worked
    assert renewed is True
    lease = await broker.current_leader()
    assert lease is not None and lease.holder == "a"
