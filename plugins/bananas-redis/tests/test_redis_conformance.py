"""The kernel's broker conformance suite and stateful machine, run against real Redis servers."""

from __future__ import annotations

import asyncio
import uuid

import pytest_asyncio
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.testing import find_redis_servers, shared_server
from hypothesis import settings

from bananas.broker import Broker
from bananas.testing import BrokerConformance, make_broker_machine
from bananas.testing.conformance import ALL_CAPABILITIES, TYPED_FETCH


class TestRedisBroker(BrokerConformance):
    claims = ALL_CAPABILITIES | {TYPED_FETCH}

    @pytest_asyncio.fixture
    async def broker_factory(self, make_broker):
        return make_broker


def _machine_factory(label: str):
    async def factory(**overrides: object) -> Broker:
        server = await asyncio.to_thread(shared_server, label)
        broker = RedisBroker(server.url, RedisOptions(prefix=f"m{uuid.uuid4().hex[:10]}", **overrides))
        await broker.connect()
        return broker

    return factory


for _label, _ in find_redis_servers():
    _case = make_broker_machine(_machine_factory(_label)).TestCase
    _case.settings = settings(deadline=None, max_examples=20, stateful_step_count=25)
    _name = "TestRedisMachine_" + _label.replace("-", "_").replace(".", "_")
    _case.__name__ = _case.__qualname__ = _name
    globals()[_name] = _case
del _case, _label
