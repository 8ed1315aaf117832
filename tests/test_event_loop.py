"""``[worker] event_loop``: uvloop when asked for or installed (``auto``), asyncio otherwise, a clear error when
uvloop is asked for but missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bananas import Bananas
from bananas.errors import ConfigError
from bananas.worker.loop import loop_factory, run

uvloop = pytest.importorskip("uvloop")


def _loop_module(choice: str) -> str:
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run(main(), choice)
    return seen[0]


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_asyncio() -> None:
    assert _loop_module("auto").startswith("uvloop")
    assert _loop_module("uvloop").startswith("uvloop")
    assert _loop_module("asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is None
    assert _loop_module("auto").startswith("asyncio")
    app = Bananas(broker="memory://", env={"WORKER_EVENT_LOOP": "uvloop", "BANANAS_LOAD_PLUGINS": ""})
    with pytest.raises(ConfigError) as info:
        app.worker_context()
    assert str(info.value) == (
        "invalid worker.event_loop = 'uvloop' (from env WORKER_EVENT_LOOP): uvloop is not installed: "
        "pip install 'bananas-queue[uvloop]', or choose auto or asyncio"
    )
