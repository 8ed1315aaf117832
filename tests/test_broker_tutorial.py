"""The broker of docs/PLUGINS.md's tutorial, extracted from the markdown and run against the conformance suite.

Every fenced block preceded by ``<!-- tutorial-broker … -->`` is, in order, part of one module; ``class MyBroker:  #
continued`` lines join a block to the class above. The suite runs the core tests and the capability suites the
tutorial claims, so the tutorial cannot rot.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest_asyncio
from hypothesis import settings

from bananas.broker import Broker, BrokerSpec, capabilities
from bananas.testing import BrokerConformance, make_broker_machine

DOC = Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md"
MARK = re.compile(r"<!-- tutorial-broker\b[^>]*-->\n```python\n(.*?)\n```", re.S)
CLAIMS = frozenset({"maintenance", "admin"})


def tutorial_source() -> str:
    blocks = MARK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "docs/PLUGINS.md lost its <!-- tutorial-broker --> code blocks"
    parts = []
    for block in blocks:
        lines = block.split("\n")
        if lines[0].startswith("class MyBroker:  # continued"):
            lines = lines[1:]  # the body goes on in the class of the block before
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def load_tutorial() -> ModuleType:
    name = "bananas_mybroker_tutorial"
    if name in sys.modules:
        return sys.modules[name]
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="tutorial-")) / f"{name}.py"
    path.write_text(tutorial_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TUTORIAL = load_tutorial()


async def make(**overrides: object) -> Broker:
    broker = TUTORIAL.MyBroker(f"mybroker://test-{uuid.uuid4().hex}", TUTORIAL.MyOptions(**overrides))
    await broker.connect()
    return broker


class TestTutorialBroker(BrokerConformance):
    claims = CLAIMS

    @pytest_asyncio.fixture
    async def broker_factory(self):
        made: list[Broker] = []

        async def tracked(**overrides: object) -> Broker:
            made.append(broker := await make(**overrides))
            return broker

        yield tracked
        for broker in made:
            await broker.close()


TestTutorialMachine = make_broker_machine(make).TestCase
TestTutorialMachine.settings = settings(deadline=None, max_examples=15, stateful_step_count=20)


def test_the_tutorial_broker_subclasses_nothing_and_registers_its_scheme() -> None:
    # Given the extracted module
    cls = TUTORIAL.MyBroker

    # Then the broker is a plain class with exactly the claimed capabilities, and its hook registers it
    assert cls.__bases__ == (object,)
    caps = capabilities(cls("mybroker://x", TUTORIAL.MyOptions()))
    assert caps.names == CLAIMS and caps.partial == {}
    registered: list[BrokerSpec] = []
    TUTORIAL.bananas_register_brokers(registered.append)
    assert [spec.schemes for spec in registered] == [("mybroker",)]
