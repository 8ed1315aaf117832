"""The I/O-free half of the cluster broker (:mod:`bananas_redis.cluster_map`), shared by its asyncio and blocking
lanes: which node is asked for the slot map and in what order, how a ``CLUSTER SLOTS`` reply becomes the map, which
errors end a refresh, and the retry rounds of a redirected call. No server needed: replies are made up here."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from bananas_redis.cluster_map import SLOTS, Rounds, SlotMapSearch, parse_slots
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

A, B, C = ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)
_MAP = [[0, 5460, [b"10.0.0.1", 7000, b"id1"]], [5461, 16383, [b"10.0.0.2", 7001, b"id2"]]]


@given(st.lists(st.integers(1, SLOTS - 1), unique=True, max_size=6).map(sorted), st.data())
def test_parse_slots_gives_every_slot_of_a_range_to_its_master(cuts: list[int], data: st.DataObject) -> None:
    # Given the slots cut into ranges, each served by some port or not served at all
    bounds = [0, *cuts, SLOTS]
    ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
    ports = [data.draw(st.none() | st.integers(7000, 7009)) for _ in ranges]
    reply = [[start, end, [b"127.0.0.1", port]] for (start, end), port in zip(ranges, ports, strict=True) if port]

    # When the reply is parsed
    slots = parse_slots(reply, ("127.0.0.1", 1))

    # Then each slot belongs to its range's master, and a range nobody serves is None
    for (start, end), port in zip(ranges, ports, strict=True):
        expected = ("127.0.0.1", port) if port else None
        assert slots[start] == slots[end] == expected
    assert len(slots) == SLOTS


def test_parse_slots_puts_a_master_without_a_host_on_the_host_that_replied() -> None:
    reply = [[0, 10, ["", 7000]], [11, 20, [b"?", 7001]], [21, 30, ["10.9.9.9", 7002]]]
    slots = parse_slots(reply, ("10.0.0.5", 6999))
    assert slots[0] == ("10.0.0.5", 7000) and slots[11] == ("10.0.0.5", 7001) and slots[30] == ("10.9.9.9", 7002)
    assert slots[31] is None


def test_a_search_asks_known_masters_then_seeds_once_each_and_stops_at_the_first_map() -> None:
    # Given known masters B, A and seeds A, C
    search = SlotMapSearch([B, A], [A, C])
    asked = []

    # When B does not answer and A does
    for address in search:
        asked.append(address)
        search.answer(RedisConnectionError("gone") if address == B else _MAP)

    # Then A was asked second, C never, and the map is A's reply
    assert asked == [B, A]
    assert search.slots()[0] == A and search.slots()[SLOTS - 1] == B


def test_a_search_where_no_node_answers_raises_the_last_connection_error() -> None:
    search = SlotMapSearch([], [A, B, C])
    errors = {A: RedisConnectionError("a"), B: OSError("b"), C: TimeoutError("c")}
    asked = []
    for address in search:
        asked.append(address)
        search.answer(errors[address])
    assert asked == [A, B, C]
    with pytest.raises(TimeoutError) as caught:
        search.slots()
    assert caught.value is errors[C]


def test_an_error_reply_ends_the_search_at_once() -> None:
    search = SlotMapSearch([A], [B])
    refused = ResponseError("ERR This instance has cluster support disabled")
    with pytest.raises(ResponseError) as caught:
        for _ in search:
            search.answer(refused)
    assert caught.value is refused


def _never(out: list[Any], todo: dict[int, Any]) -> NoReturn:
    raise AssertionError("gave up")


def test_rounds_end_when_nothing_is_left_and_back_off_only_on_tryagain() -> None:
    rounds = Rounds(3, 60.0, _never)
    assert rounds.todo == {0: None, 1: None, 2: None} and rounds.out == [None] * 3
    assert rounds.after({1: A}, wait=False) == 0.0  # an ASK: resend at once
    assert rounds.todo == {1: A}
    pauses = [rounds.after({1: None}, wait=True) for _ in range(7)]  # TRYAGAIN: doubling pauses, up to 0.5 s
    assert pauses == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
    assert rounds.after({}, wait=False) is None


def test_rounds_past_their_timeout_give_up_with_the_replies_so_far() -> None:
    seen: list[Any] = []

    def give_up(out: list[Any], todo: dict[int, Any]) -> NoReturn:
        seen.append((list(out), dict(todo)))
        raise RedisConnectionError("kept redirecting")

    rounds = Rounds(2, 0.0, give_up)
    rounds.out[0] = "done"
    with pytest.raises(RedisConnectionError, match="kept redirecting"):
        rounds.after({1: None}, wait=True)
    assert seen == [(["done", None], {1: None})]
    assert rounds.after({}, wait=False) is None  # finished: no timeout applies
