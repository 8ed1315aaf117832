"""docs/HANDLERS.md: its Python examples run, in order, as one program (memory:// broker, a worker in a thread)."""

from __future__ import annotations

import os
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "HANDLERS.md"
BLOCK = re.compile(r"```python\n(.*?)\n```", re.S)


def test_the_python_examples_of_handlers_md_run(tmp_path, monkeypatch):
    # Given the examples, in a directory without configuration and an environment without Bananas settings
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 7, "docs/HANDLERS.md lost its Python examples"
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith(("BANANAS_", "REDIS_", "WORKER_", "ENABLE_", "JOB_"))]:
        monkeypatch.delenv(key)

    # When they run one after the other in one namespace
    namespace: dict[str, object] = {"__name__": "handlers_docs"}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the doc's own examples
    finally:
        worker = namespace.get("worker")
        if worker is not None:
            worker.request_stop()  # type: ignore[attr-defined]

    # Then every assertion in them held, and the worker they started has stopped
    thread = namespace["thread"]
    assert not thread.is_alive()  # type: ignore[attr-defined]
