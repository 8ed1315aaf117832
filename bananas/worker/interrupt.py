"""Interrupting a sync handler's thread when its job times out (the technique dramatiq's time limit uses)."""

from __future__ import annotations

import ctypes
import threading


class JobInterrupt(BaseException):
    """Raised inside a handler thread to stop it. A ``BaseException`` so ``except Exception`` cannot swallow it."""


class JobTimeout(Exception):
    """A job ran longer than its timeout."""


def interrupt_thread(thread_id: int, exc: type[BaseException] = JobInterrupt) -> bool:
    """Ask CPython to raise ``exc`` in thread ``thread_id`` at its next bytecode; ``True`` if the thread exists.

    A thread blocked inside C code (``time.sleep``, a socket read) sees the exception once that call returns.
    """
    if thread_id not in {t.ident for t in threading.enumerate()}:
        return False
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))
    if hit > 1:  # pragma: no cover - CPython's documented safety valve
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return hit == 1
