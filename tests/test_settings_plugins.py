"""Plugin-declared settings: owners, known-owner hints, [[periodic]], `bananas config`, per-package docs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

import pytest

from bananas._manager import load_plugins
from bananas.config import Schema, load_settings, read_sources
from bananas.config_kernel import KERNEL_KEYS, KNOWN_OWNERS
from bananas.config_options import build_options
from bananas.config_schema import setting
from bananas.errors import ConfigError, PluginError
from bananas.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parents[1]

MODE_DISTS = ("bananas-mode-thin-plus", "bananas-mode-scaled", "bananas-mode-job-specialized")


def _installed(dist):
    try:
        version(dist)
    except PackageNotFoundError:
        return False
    return True


needs_mode_plugins = pytest.mark.skipif(
    not all(map(_installed, MODE_DISTS)),
    reason="checks the installed mode plugins' own declarations; runs where they are installed (the README's "
           "test command installs every package)",
)


def kernel_only(tmp_path, env=None, **kwargs):
    """Built-ins only: no installed plugin declares anything."""
    plugins = load_plugins(entrypoints=False, env={})
    return load_settings(env=env or {}, cwd=tmp_path, plugins=plugins, **kwargs)


class Declares:
    def __init__(self, name, *specs):
        self.__name__ = name
        self.specs = specs

    @hookimpl
    def bananas_register_settings(self, register):
        for spec in self.specs:
            register(spec)


def test_kernel_holds_no_mode_or_log_tier_keys():
    keys = {spec.key for spec in KERNEL_KEYS}
    assert not any(key.startswith(("logging.file", "logging.elasticsearch")) for key in keys)
    for owner in KNOWN_OWNERS:
        assert not any(key.startswith(owner.prefix) for key in keys), owner.prefix
    assert {"logging.level", "logging.format", "logging.color", "worker.concurrency", "periodic"} <= keys


def test_mode_keys_need_their_plugin(tmp_path):
    with pytest.raises(ConfigError) as info:
        kernel_only(tmp_path, env={"WORKER_HIGH_COUNT": "4"})
    assert str(info.value) == (
        "invalid worker.high_count = '4' (from env WORKER_HIGH_COUNT): unknown key; it belongs to the scaled worker "
        "mode: pip install bananas-mode-scaled"
    )
    (tmp_path / "bananas.toml").write_text("[worker]\npriority_concurrency = 3\n")
    with pytest.raises(ConfigError, match="pip install bananas-mode-thin-plus$"):
        kernel_only(tmp_path)


def test_log_tier_keys_need_their_plugin(tmp_path):
    with pytest.raises(ConfigError) as info:
        kernel_only(tmp_path, env={"LOG_FILE_ENABLED": "true"})
    assert str(info.value) == (
        "invalid logging.file.enabled = 'true' (from env LOG_FILE_ENABLED): unknown key; "
        "it belongs to the file log tier: pip install bananas-logfile"
    )
    (tmp_path / "bananas.toml").write_text("[logging.elasticsearch]\nenabled = true\npassword = 'pw'\n")
    with pytest.raises(ConfigError, match="elasticsearch log tier: pip install bananas-elasticsearch$") as info:
        kernel_only(tmp_path)
    assert "'pw'" not in str(info.value)


def test_unknown_tier_still_passes_through(tmp_path):
    (tmp_path / "bananas.toml").write_text("[logging.loki]\nenabled = true\nurl = 'http://loki'\n")
    s = kernel_only(tmp_path)
    assert s.table("logging.loki") == {"enabled": True, "url": "http://loki"}
    assert s.logging_tiers() == ["loki"] and s.owner("logging.loki.url") == "pass-through"


@needs_mode_plugins
def test_installed_mode_plugins_declare_and_own_their_keys(tmp_path):
    s = load_settings(env={"WORKER_HIGH_COUNT": "4", "BANANAS_WORKER_JOB_TYPES": "a,b"}, cwd=tmp_path)
    assert (s["worker.high_count"], s.source("worker.high_count")) == (4, "env WORKER_HIGH_COUNT")
    assert s.owner("worker.high_count") == "bananas-mode-scaled"
    assert s.owner("worker.job_types") == "bananas-mode-job-specialized" and s["worker.job_types"] == ("a", "b")
    assert s.owner("worker.concurrency") == "bananas-queue"
    assert set(s.owner("worker.scheduled_queues").split(", ")) == {"bananas-mode-thin-plus", "bananas-mode-scaled"}
    rows = {row["key"]: row for row in s.explain(owners=True)}
    assert rows["worker.priority_concurrency"]["owner"] == "bananas-mode-thin-plus"
    # and each row says which variable sets the key and what it means
    assert "WORKER_CONCURRENCY" in rows["worker.concurrency"]["env"]
    assert rows["worker.concurrency"]["help"] == "Concurrent job slots of this worker."
    assert "WORKER_PRIORITY_CONCURRENCY" in rows["worker.priority_concurrency"]["env"]
    assert rows["worker.priority_concurrency"]["help"]


def test_typo_in_a_plugin_key_gets_did_you_mean(tmp_path):
    (tmp_path / "bananas.toml").write_text("[worker]\nhigh_cont = 3\n")
    scaled = Declares("scaled", setting("worker.high_count", "int", 3, "Number of high pools.", "WORKER_HIGH_COUNT"))
    plugins = load_plugins(plugins=[scaled], entrypoints=False, env={})
    with pytest.raises(ConfigError, match="did you mean 'worker.high_count'"):
        load_settings(env={}, cwd=tmp_path, plugins=plugins)


def test_plugin_declaration_conflicts(tmp_path):
    one = Declares("one", setting("extra.level", "int", 1, "A level.", minimum=0))
    same = Declares("same", setting("extra.level", "int", 1, "A level.", minimum=0))
    other = Declares("other", setting("extra.level", "int", 2, "A level."))
    plugins = load_plugins(plugins=[one, same], entrypoints=False, env={})
    s = load_settings(env={"BANANAS_EXTRA_LEVEL": "5"}, cwd=tmp_path, plugins=plugins)
    assert s["extra.level"] == 5 and s.owner("extra.level") == "tests.test_settings_plugins"  # objects: their module
    assert plugins.settings.by_plugin("one") == plugins.settings.by_plugin("same") == ["extra.level"]
    with pytest.raises(PluginError, match="claimed by two plugins"):
        load_plugins(plugins=[one, other], entrypoints=False, env={})
    kernel = Declares("kernel", setting("worker.concurrency", "int", 3, "Mine."))
    with pytest.raises(PluginError, match="'worker.concurrency' of tests.test_settings_plugins conflicts .* bananas"):
        Schema.of(load_plugins(plugins=[kernel], entrypoints=False, env={}))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bananas.toml", "[[periodic]]\nname = 'nightly'\ncron = '0 3 * * *'\n[[periodic]]\nname = 'hourly'\n"),
        ("pyproject.toml", "[tool.bananas]\n[[tool.bananas.periodic]]\nname = 'nightly'\ncron = '0 3 * * *'\n"
                           "[[tool.bananas.periodic]]\nname = 'hourly'\n"),
    ],
)
def test_periodic_array_of_tables(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    s = kernel_only(tmp_path)
    assert s["periodic"] == ({"name": "nightly", "cron": "0 3 * * *"}, {"name": "hourly"})
    assert s.source("periodic") == f"file {name}" and s.owner("periodic") == "bananas-queue"
    assert s.as_dict()["periodic"][1] == {"name": "hourly"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("periodic = 5\n", "must be a list of tables"),
        ("periodic = ['a']\n", "item 0 is not a table"),
        ("[[periodic]]\ncron = 'x'\n", "item 0 has no string name"),
        ("[[periodic]]\nname = 3\n", "item 0 has no string name"),
    ],
)
def test_periodic_shape_is_checked(tmp_path, text, why):
    (tmp_path / "bananas.toml").write_text(text)
    with pytest.raises(ConfigError, match=f"invalid periodic = .*{why}"):
        kernel_only(tmp_path)


def test_two_phases(tmp_path):
    (tmp_path / "bananas.toml").write_text("[worker]\nhigh_count = 2\n")
    raw = read_sources(env={}, cwd=tmp_path)  # reading needs no schema
    assert raw.config_file == "bananas.toml"
    with pytest.raises(ConfigError, match="pip install bananas-mode-scaled"):
        raw.validate(Schema())
    scaled = Declares("scaled", setting("worker.high_count", "int", 3, "Number of high pools.", "WORKER_HIGH_COUNT"))
    assert raw.validate(Schema.of(load_plugins(plugins=[scaled], entrypoints=False, env={})))["worker.high_count"] == 2


def test_one_options_builder(tmp_path):
    import attrs

    @attrs.frozen
    class Opts:
        lease: float = 30.0

    assert build_options(Opts, {"lease": "1m"}, "broker_options", "file x") == Opts(60.0)
    assert build_options(None, {"a": {"b": 1}}, "routes", "file x") == {"a": {"b": 1}}
    with pytest.raises(ConfigError, match=r"invalid broker_options.nope = 1 \(from file x\): unknown option"):
        build_options(Opts, {"nope": 1}, "broker_options", "file x")


MEM = {"BANANAS_BROKER": "memory://"}
"""A broker the kernel has built in, so a check after the broker's can fail with the kernel alone."""


def run_config(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "config", *args],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **(env or {})}, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ('serializer = "nosuchformat"\n', MEM, "Error: no serializer named 'nosuchformat'; installed: json"),
        ('broker = "nosuch://x"\n', {}, "Error: no broker named 'nosuch'; installed: "),
        ('router = "nosuch"\n', MEM, "Error: no router named 'nosuch'; installed: "),
        ("", {**MEM, "WORKER_MODE": "nosuch"}, "Error: no worker mode named 'nosuch'; installed: "),
        ("[logging.loki]\nenabled = true\n", MEM, "Error: no log sink named 'loki'; installed: console"),
    ],
)
def test_config_exits_2_with_one_line_on_unknown_plugin(tmp_path, toml, env, expected):
    (tmp_path / "bananas.toml").write_text(toml)
    result = run_config(tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(expected)


@needs_mode_plugins
def test_config_shows_owner_in_text_and_json(tmp_path):
    result = run_config(tmp_path, "--json", env={"WORKER_HIGH_COUNT": "4"})
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)["settings"]}
    assert rows["worker.high_count"] == {"key": "worker.high_count", "value": 4, "source": "env WORKER_HIGH_COUNT",
                                         "owner": "bananas-mode-scaled",
                                         "env": ["BANANAS_WORKER_HIGH_COUNT", "WORKER_HIGH_COUNT"],
                                         "help": rows["worker.high_count"]["help"]}
    assert "high" in rows["worker.high_count"]["help"].lower()
    text = run_config(tmp_path).stdout
    assert any(line.startswith("worker.high_count") and line.endswith("(default)  [bananas-mode-scaled]")
               for line in text.splitlines())


# -- every package documents the settings it declares -------------------------------------------------------------


def _declaring_plugins():
    for ep in entry_points(group="bananas"):
        module = importlib.import_module(ep.value.split(":")[0])
        if hasattr(module, "bananas_register_settings"):
            yield ep.dist.metadata["Name"], module


@needs_mode_plugins
def test_every_declaring_package_documents_its_settings():
    found = list(_declaring_plugins())
    assert {name for name, _ in found} >= {"bananas-mode-thin-plus", "bananas-mode-scaled",
                                           "bananas-mode-job-specialized"}
    for dist, module in found:
        specs = []
        module.bananas_register_settings(specs.append)
        readme = ROOT / "plugins" / dist / "README.md"
        text = readme.read_text(encoding="utf-8")
        for spec in specs:
            assert f"`{spec.key}`" in text, (dist, spec.key)
            for name in spec.env:
                assert f"`{name}`" in text, (dist, name)
