"""Plugin discovery, ownership of registrations, lookup errors and the `bananas plugins` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from bananas import Bananas, hookimpl
from bananas._manager import load_plugins
from bananas.broker import BrokerSpec
from bananas.builtin.memory_broker import MemoryBroker
from bananas.errors import DuplicatePlugin, PluginError, UnknownPlugin
from bananas.serializer import SerializerSpec


class ExtraMemory:
    """A plugin claiming the built-in 'memory' scheme a second time."""

    __name__ = "extra_memory"

    @hookimpl
    def bananas_register_brokers(self, register: Any) -> None:
        register(BrokerSpec(schemes=("memory",), factory=MemoryBroker))


def test_builtins_register_through_the_hooks_with_the_kernel_as_owner() -> None:
    plugins = load_plugins(entrypoints=False, env={})
    entry = plugins.brokers.entries["memory"]
    assert entry.plugin == "bananas.builtin.memory_broker" and entry.dist == "bananas-queue"
    assert "json" in plugins.serializers and "priority" in plugins.routers and "console" in plugins.log_sinks


def test_two_plugins_claiming_one_scheme_is_an_error_naming_both() -> None:
    with pytest.raises(DuplicatePlugin) as err:
        load_plugins(plugins=[ExtraMemory()], entrypoints=False, env={})
    message = str(err.value)
    assert message.startswith("broker 'memory' is claimed by two plugins: bananas-queue ")
    assert "(bananas.builtin.memory_broker)" in message and "(extra_memory)" in message


def test_unknown_serializer_lists_installed_and_hints_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownPlugin) as err:
        Bananas(broker="memory://", serializer="protobuf", entrypoints=False, env={})
    assert str(err.value) == "no serializer named 'protobuf'; installed: json — pip install bananas-protobuf"


def test_unknown_broker_scheme_names_the_scheme(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownPlugin, match=r"^no broker named 'kafka'; installed: memory$"):
        Bananas(broker="kafka://localhost", entrypoints=False, env={})


def test_unknown_worker_mode_lists_installed_modes(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = Bananas(broker="memory://", overrides={"worker.mode": "turbo"}, env={})
    with pytest.raises(UnknownPlugin, match=r"^no worker mode named 'turbo'; installed: .*default.*thin"):
        app.plan()


def test_misspelled_hook_fails_at_start_up() -> None:
    class Typo:
        __name__ = "typo"

        @hookimpl
        def bananas_register_broker(self, register: Any) -> None:  # missing the s
            pass

    with pytest.raises(PluginError, match="unknown hook 'bananas_register_broker' in plugin"):
        load_plugins(plugins=[Typo()], entrypoints=False, env={})


def test_unprefixed_methods_are_ignored() -> None:
    class Helper:
        __name__ = "helper"

        def register_brokers(self, register: Any) -> None:  # no prefix, no marker: not a hook
            raise AssertionError("must not be called")

    load_plugins(plugins=[Helper()], entrypoints=False, env={})


def test_disable_builtin_plugins_but_not_essential_ones() -> None:
    plugins = load_plugins(entrypoints=False, env={"BANANAS_DISABLE_PLUGINS": "memory_broker"})
    assert "memory" not in plugins.brokers
    with pytest.raises(PluginError, match="json_serializer cannot be disabled"):
        load_plugins(entrypoints=False, env={"BANANAS_DISABLE_PLUGINS": "json_serializer"})


def _fake_mode_dist(root: Any, dist: str, mode: str) -> None:
    """An installed-looking distribution ``dist`` (a module and a .dist-info on ``root``) registering ``mode``."""
    module = dist.replace("-", "_")
    (root / f"{module}.py").write_text(
        "from bananas import hookimpl\n"
        "from bananas.worker_mode import WorkerModeSpec\n\n\n"
        "@hookimpl\n"
        "def bananas_register_worker_modes(register):\n"
        f"    register(WorkerModeSpec(name={mode!r}, factory=object))\n"
    )
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bananas]\n{mode} = {module}\n")


def test_load_plugins_env_limits_entry_points(tmp_path, monkeypatch) -> None:
    # Given two installed mode distributions
    _fake_mode_dist(tmp_path, "bananas-fake-turbo", "turbo")
    _fake_mode_dist(tmp_path, "bananas-fake-nitro", "nitro")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"turbo", "nitro"} <= set(load_plugins(env={}).worker_modes)
    # When BANANAS_LOAD_PLUGINS is empty, no entry point loads: the built-in modes are still there
    none = load_plugins(env={"BANANAS_LOAD_PLUGINS": ""})
    assert set(none.worker_modes) == {"default", "thin"}
    assert all(dist == "bananas-queue" for dist, _ in none.dists.values())
    # When it names one distribution, only that one loads
    only = load_plugins(env={"BANANAS_LOAD_PLUGINS": "bananas-fake-turbo"})
    assert "turbo" in only.worker_modes and "nitro" not in only.worker_modes
    assert set(only.worker_modes) == {"default", "thin", "turbo"}


def test_trace_env_writes_hook_calls(capfd) -> None:
    load_plugins(entrypoints=False, env={"BANANAS_TRACE_PLUGINS": "1"})
    assert "bananas_register_brokers" in capfd.readouterr().err


def test_serializer_registration_conflict_names_both_owners() -> None:
    class Json2:
        __name__ = "json2"

        @hookimpl
        def bananas_register_serializers(self, register: Any) -> None:
            register(SerializerSpec(name="json", factory=object))

    with pytest.raises(DuplicatePlugin, match="serializer 'json' is claimed by two plugins"):
        load_plugins(plugins=[Json2()], entrypoints=False, env={})


def run_cli(*args: str, cwd: Any = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_plugins_json_lists_distribution_version_hooks_and_names() -> None:
    # When `bananas plugins --json` runs
    result = run_cli("plugins", "--json")
    # Then it is JSON with one row per plugin, including the built-in mode plugins
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    memory = rows["bananas.builtin.memory_broker"]
    assert memory["distribution"] == "bananas-queue" and memory["version"]
    assert memory["hooks"] == ["bananas_register_brokers"] and memory["registered"] == {"brokers": ["memory"]}
    thin = rows["bananas.builtin.thin_mode"]
    assert thin["distribution"] == "bananas-queue" and thin["registered"] == {"worker_modes": ["thin"]}
    assert thin["hooks"] == ["bananas_register_worker_modes"] and thin["version"] == memory["version"]
    default = rows["bananas.builtin.default_mode"]
    assert default["distribution"] == "bananas-queue" and default["registered"] == {"worker_modes": ["default"]}
    # and each registered name carries its spec's one-line summary
    assert set(thin["summaries"]) == {"worker_modes"} and thin["summaries"]["worker_modes"]["thin"]


def test_plugins_lists_the_built_in_modes_with_the_kernel_alone(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bananas.cli", "plugins"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "BANANAS_LOAD_PLUGINS": ""},
    )
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n")
    assert "bananas.builtin.thin_mode  (bananas-queue " in result.stdout
    assert "bananas.builtin.default_mode  (bananas-queue " in result.stdout
    assert "    registered: worker_modes: thin" in blocks and "    registered: worker_modes: default" in blocks
    assert any(line.startswith("      worker mode thin: ") and len(line) > 26 for line in blocks)
    dists = {line.split("  (")[1].split()[0] for line in blocks if line and not line.startswith(" ")}
    assert dists == {"bananas-queue"}


def test_plugins_hook_filter() -> None:
    result = run_cli("plugins", "--json", "--hook", "bananas_register_serializers")
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "bananas.builtin.json_serializer"  # serializer plugins (msgpack, ...) may follow
    assert all("bananas_register_serializers" in row["hooks"] for row in rows)


def test_wrapper_observers_are_rejected() -> None:
    class Wrapping:
        __name__ = "wrapping"

        @hookimpl(wrapper=True)
        def bananas_job_started(self, job: Any, pool_id: str) -> Any:
            return (yield)

    with pytest.raises(PluginError, match="bananas_job_started cannot be a wrapper"):
        load_plugins(plugins=[Wrapping()], entrypoints=False, env={})


def test_plugin_names_ignore_case_and_dash_or_underscore_and_unknown_ones_get_did_you_mean() -> None:
    from bananas._manager import load_plugins
    from bananas.errors import UnknownPlugin

    plugins = load_plugins(entrypoints=False, env={})
    # Given the built-in thin mode / When named as users type it / Then it is found
    assert plugins.worker_modes.get("Thin").name == "thin"
    assert plugins.worker_modes.get("DEFAULT").name == "default"
    assert plugins.serializers.get("JSON").name == "json"
    # and a misspelled one names the closest installed plugin and lists the rest
    with pytest.raises(UnknownPlugin) as info:
        plugins.worker_modes.get("thinn")
    assert str(info.value) == "no worker mode named 'thinn'; did you mean 'thin'? installed: default, thin"
    with pytest.raises(UnknownPlugin, match=r"^no router named 'zzz'; installed: priority$"):
        plugins.routers.get("zzz")


def test_worker_mode_from_env_in_another_case_runs(tmp_path) -> None:
    (tmp_path / "tasks.py").write_text("from bananas import Bananas\napp = Bananas()\n")
    result = run_cli("worker", "--app", "tasks:app", "--dry-run", cwd=tmp_path,
                     env={**os.environ, "WORKER_MODE": "Thin", "BANANAS_BROKER": "memory://"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == "thin"
