"""Chaos drills: fault injection on real redis-server and ``bananas worker`` processes (see docs/RELIABILITY.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("bananas_redis", reason="the chaos drills run the Redis deployment: install plugins/bananas-redis")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _support, proxy (and chaos_app for the workers)

from _support import Drill  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: fault drills on real processes (tests/chaos, docs/RELIABILITY.md)")


@pytest.fixture
def make_drill(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Drill]]:
    """``make_drill(**options)``: a broker and a ledger redis-server plus a bananas.toml in ``tmp_path`` (see
    :class:`Drill`); every process it started is stopped by pid after the test, and on failure the tail of every
    process log is printed."""
    made: list[Drill] = []

    def make(**options: Any) -> Drill:
        drill = Drill(tmp_path, **options)
        made.append(drill)
        return drill

    try:
        yield make
    finally:
        rep = getattr(request.node, "rep_call", None)
        for drill in made:
            if rep is not None and rep.failed:
                print(drill.logs())
            drill.close()


@pytest.fixture
def drill(make_drill: Callable[..., Drill]) -> Drill:
    return make_drill()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
