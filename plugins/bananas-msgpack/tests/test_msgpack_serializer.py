"""bananas-msgpack: the contract, plus refusing extension types on untrusted bytes."""

from __future__ import annotations

import msgpack
import pytest
from bananas_msgpack import MsgpackSerializer

from bananas.errors import SerializationError
from bananas.testing.serializers import SerializerConformance


class TestMsgpackSerializer(SerializerConformance):
    factory = MsgpackSerializer


def test_extension_types_are_refused_not_turned_into_objects() -> None:
    # Given a map holding an extension type
    body = msgpack.packb({"x": msgpack.ExtType(42, b"\x00evil")})
    # When decoded, then it is refused with a reason naming the extension
    with pytest.raises(SerializationError, match="extension type 42"):
        MsgpackSerializer().loads(body)


def test_timestamps_are_read_as_float_seconds() -> None:
    body = msgpack.packb({"at": msgpack.Timestamp(1700000000, 500_000_000)})
    assert MsgpackSerializer().loads(body) == {"at": 1700000000.5}


def test_a_top_level_value_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(SerializationError, match="expected a msgpack map, got list"):
        MsgpackSerializer().loads(msgpack.packb([1, 2]))


def test_deep_nesting_raises_serialization_error() -> None:
    with pytest.raises(SerializationError):
        MsgpackSerializer().loads(b"\x91" * 100_000)


def test_integers_beyond_64_bits_are_refused_on_write() -> None:
    with pytest.raises(SerializationError, match="not msgpack-serializable"):
        MsgpackSerializer().dumps({"n": 2**64})


def test_smaller_than_json_for_ints_and_strings_but_not_for_short_floats() -> None:
    from bananas.builtin.json_serializer import JsonSerializer

    msgpack_size = lambda data: len(MsgpackSerializer().dumps(data))  # noqa: E731 - local shorthand
    json_size = lambda data: len(JsonSerializer().dumps(data))  # noqa: E731 - local shorthand
    # ints and strings pack smaller than their JSON text
    ints = {"user_id": 123456, "ids": list(range(1000, 1100)), "tags": ["a", "b"], "active": True}
    assert msgpack_size(ints) < json_size(ints)
    # every float is 9 bytes in msgpack, more than "1.5"
    floats = {"scores": [1.5, 2.25, 3.0] * 20}
    assert msgpack_size(floats) > json_size(floats)
