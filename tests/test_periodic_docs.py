"""docs/PERIODIC.md: its Python examples run, in order, as one program (on the memory:// broker)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "PERIODIC.md"
BLOCK = re.compile(r"```python\n(.*?)\n```", re.S)


def test_the_python_examples_of_periodic_md_run(tmp_path, monkeypatch, capsys):
    # Given the examples, in a directory without configuration and an environment without Bananas settings
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "docs/PERIODIC.md lost its Python examples"
    monkeypatch.chdir(tmp_path)
    for key in [k for k in __import__("os").environ if k.startswith(("BANANAS_", "REDIS_", "WORKER_", "ENABLE_"))]:
        monkeypatch.delenv(key)

    # When they run one after the other in one namespace
    namespace: dict[str, object] = {"__name__": "periodic_docs"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the doc's own examples

    # Then every assertion in them held, and the app has the three schedules of the first example
    app = namespace["app"]
    assert app.schedules.names() == ["cleanup_old_data", "weekly_report", "heartbeat"]


def test_the_toml_example_of_periodic_md_is_a_valid_configuration(tmp_path, monkeypatch):
    # Given the TOML example written as bananas.toml
    toml = re.search(r"```toml\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert toml is not None
    (tmp_path / "bananas.toml").write_text(toml.group(1))
    monkeypatch.chdir(tmp_path)

    # When an app is built there
    from bananas import Bananas

    app = Bananas(broker="memory://periodic-docs-toml", env={}, entrypoints=False)

    # Then both tables are schedules with their fields
    assert app.schedules.names() == ["cleanup_old_data", "weekly_report"]
    report = app.schedules.get("weekly_report")
    assert (report.job, report.timezone, report.catch_up) == ("generate_weekly_report", "Europe/Berlin", "none")
    assert app.schedules.get("cleanup_old_data").payload == {"max_age_days": 30}
