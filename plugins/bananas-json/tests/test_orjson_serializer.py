"""bananas-json: the orjson serializer keeps the serializer contract and writes plain JSON."""

from __future__ import annotations

import json

import pytest
from bananas_json import OrjsonSerializer

from bananas import Bananas
from bananas.errors import SerializationError
from bananas.testing.serializers import SerializerConformance


class TestOrjsonSerializer(SerializerConformance):
    factory = OrjsonSerializer


def test_bytes_are_plain_json_that_the_standard_library_reads() -> None:
    # Given a mapping with unicode and nesting
    data = {"text": "🍌 é", "nested": {"list": [1, 2.5, None, True]}}
    # When orjson writes it, then json.loads reads the same mapping
    assert json.loads(OrjsonSerializer().dumps(data)) == data


def test_non_string_keys_are_refused_like_the_builtin() -> None:
    with pytest.raises(SerializationError, match="not JSON-serializable"):
        OrjsonSerializer().dumps({1: "x"})  # type: ignore[dict-item]


def test_integers_beyond_64_bits_are_refused_on_write() -> None:
    with pytest.raises(SerializationError):
        OrjsonSerializer().dumps({"n": 2**64})


def test_registered_as_orjson_next_to_the_builtin_json(tmp_path, monkeypatch) -> None:
    # Given an app that loads this distribution's entry point
    monkeypatch.chdir(tmp_path)
    app = Bananas(broker="memory://orjson-reg", serializer="orjson", env={"BANANAS_LOAD_PLUGINS": "bananas-json"})
    # Then the kernel's json and this package's orjson are both there, with their owners
    assert app.codec.serializer.name == "orjson"
    assert "json" in app.plugins.serializers and "orjson" in app.plugins.serializers
