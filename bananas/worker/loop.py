"""Which event loop a worker process runs on (``[worker] event_loop``): uvloop when asked for or, with ``auto``, when
it is installed (``pip install 'bananas-queue[uvloop]'``); measured at about 10 % less worker CPU per job with the
Redis broker (docs/PERFORMANCE.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["loop_factory", "run"]


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of ``choice``'s loop; ``None`` is asyncio's own. ``uvloop`` without uvloop installed is an
    :class:`ImportError` (the app checks the setting before a worker starts)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, None], choice: str) -> None:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        runner.run(main)
