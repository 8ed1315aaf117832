"""A third-party broker package, built and pip-installed here, selected by URL scheme in bananas.toml.

This is the path a real third party takes: its own pyproject.toml, an entry point in group ``bananas``, and
nothing but the kernel's public API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bananas import Bananas
from bananas.errors import DuplicatePlugin, UsageError

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "{version}"
dependencies = ["bananas"]

[project.entry-points.bananas]
{ep} = "{module}"

[tool.hatch.build.targets.wheel]
packages = ["{module}"]
"""

MODULE = '''
"""A broker for mybroker:// URLs: the in-memory semantics under another scheme, registered by a third party."""
import attrs
from bananas import hookimpl
from bananas.broker import BrokerOptions, BrokerSpec
from bananas.builtin.memory_broker import MemoryBroker


@attrs.frozen(kw_only=True)
class MyOptions(BrokerOptions):
    greeting: str = "hello"


class MyBroker:
    """The public core protocol plus maintenance, without subclassing any kernel class: it keeps a memory broker
    inside and exposes only these methods (no admin, no fast lanes), as a minimal third-party broker would."""

    created: list[str] = []

    def __init__(self, url: str, options: MyOptions) -> None:
        self.options = options
        self._inner = MemoryBroker("memory://" + url.partition("://")[2], options)
        MyBroker.created.append(options.greeting)

    async def connect(self):
        await self._inner.connect()

    async def close(self):
        await self._inner.close()

    async def enqueue(self, envelopes):
        await self._inner.enqueue(envelopes)

    async def fetch(self, queues, limit, timeout):
        return await self._inner.fetch(queues, limit, timeout)

    async def renew(self, deliveries):
        return await self._inner.renew(deliveries)

    async def ack(self, deliveries):
        return await self._inner.ack(deliveries)

    async def retry(self, delivery, *, body, at):
        return await self._inner.retry(delivery, body=body, at=at)

    async def dead_letter(self, delivery, *, body, reason):
        return await self._inner.dead_letter(delivery, body=body, reason=reason)

    async def release(self, deliveries):
        return await self._inner.release(deliveries)

    async def depths(self, queues=None):
        return await self._inner.depths(queues)

    async def reap(self):
        return await self._inner.reap()

    async def move_due(self, limit=1000):
        return await self._inner.move_due(limit)


@hookimpl
def bananas_add_commands(cli):
    import click

    @cli.command("mybroker-ping")
    def ping():
        """Answer pong."""
        click.echo("pong")


@hookimpl
def bananas_register_brokers(register):
    register(BrokerSpec(schemes=("mybroker",), factory=MyBroker, options=MyOptions, summary="third-party test"))
'''


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, timeout=300, capture_output=True)


def build_package(root: Path, dist: str, module: str, version: str = "1.2.0") -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT.format(dist=dist, version=version, ep=dist, module=module))
    (pkg / module / "__init__.py").write_text(textwrap.dedent(MODULE))
    return pkg


@pytest.fixture(scope="module")
def mybroker_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    pkg = build_package(tmp_path_factory.mktemp("thirdparty"), "bananas-mybroker", "bananas_mybroker")
    pip("install", "--no-build-isolation", "--no-deps", str(pkg))
    try:
        yield
    finally:
        pip("uninstall", "-y", "bananas-mybroker")
        sys.modules.pop("bananas_mybroker", None)


def test_worker_processes_a_job_through_a_third_party_broker(mybroker_installed, tmp_path, monkeypatch) -> None:
    # Given bananas.toml selecting the third party's scheme, with one of its own options
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bananas.toml").write_text(
        'broker = "mybroker://shop"\nresult_backend = "memory://shop"\n\n'
        '[worker]\nmode = "thin"\n\n[broker_options]\ngreeting = "hej"\n'
    )
    app = Bananas(env={})
    done = threading.Event()

    @app.job("pack")
    def pack(item: str) -> str:
        done.set()
        return f"packed {item}"

    # When a job is enqueued and a worker runs
    handle = app.enqueue("pack", {"item": "banana"})
    worker = app.worker()
    thread = worker.start_in_thread()
    try:
        # Then the job runs through the plugin's broker, built with the configured option
        assert handle.result(timeout=10) == "packed banana"
    finally:
        worker.request_stop()
        thread.join(15)
    from bananas_mybroker import MyBroker

    broker = app.new_broker()
    assert type(broker) is MyBroker and MyBroker.__bases__ == (object,) and "hej" in MyBroker.created
    caps = app.capabilities(broker)
    assert caps.names == {"maintenance"} and caps.partial == {}
    # And inspection, which needs the admin capability, says so instead of failing with an AttributeError
    with pytest.raises(UsageError, match="broker capability 'admin'"):
        app.get_job(handle.id)
    owner = app.plugins.brokers.entries["mybroker"]
    assert (owner.dist, owner.version) == ("bananas-mybroker", "1.2.0")


def test_plugins_command_lists_the_third_party(mybroker_installed) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bananas.cli", "plugins", "--json"], capture_output=True, text=True, timeout=60
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    row = rows["bananas-mybroker"]
    assert row["distribution"] == "bananas-mybroker" and row["version"] == "1.2.0"
    assert row["registered"] == {"brokers": ["mybroker"]}
    assert row["hooks"] == ["bananas_add_commands", "bananas_register_brokers"]


def test_plugin_adds_a_cli_subcommand(mybroker_installed) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bananas.cli", "mybroker-ping"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "pong\n"


def test_two_distributions_claiming_one_scheme_are_named(mybroker_installed, tmp_path) -> None:
    # Given a second package that also claims mybroker://
    pkg = build_package(tmp_path, "acme-fastbroker", "acme_fastbroker", version="0.3")
    pip("install", "--no-build-isolation", "--no-deps", str(pkg))
    try:
        # When plugins load / Then the error names both distributions and versions
        with pytest.raises(DuplicatePlugin) as err:
            Bananas(broker="memory://", env={})
        message = str(err.value)
        assert message.startswith("broker 'mybroker' is claimed by two plugins: ")
        assert "bananas-mybroker 1.2.0" in message and "acme-fastbroker 0.3" in message
    finally:
        pip("uninstall", "-y", "acme-fastbroker")
        sys.modules.pop("acme_fastbroker", None)
