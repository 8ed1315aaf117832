"""Redis URLs of the three deployments (:mod:`bananas_redis.urls`): what parses, and the one-line errors (password
redacted, naming what is allowed) for the broker and the result backend."""

from __future__ import annotations

import pytest
from bananas_redis import RedisBroker, RedisClusterBroker, RedisResultBackend, RedisSentinelBroker
from bananas_redis.urls import RedisTarget, parse_redis_url
from hypothesis import given
from hypothesis import strategies as st

from bananas.plugin_api import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/",
         RedisTarget("cluster", False, (("10.0.0.1", 7000), ("10.0.0.2", 7001)))),
        ("rediss+cluster://app:s%40cret@node-a,node-b:7001",
         RedisTarget("cluster", True, (("node-a", 6379), ("node-b", 7001)), "app", "s@cret")),
        ("redis+cluster://[::1]:7000/0", RedisTarget("cluster", False, (("::1", 7000),))),
        ("redis+sentinel://s1:26379,s2,s3:26380/mymaster/2",
         RedisTarget("sentinel", False, (("s1", 26379), ("s2", 26379), ("s3", 26380)), None, None, "mymaster", 2)),
        ("rediss+sentinel://:pw@s1/main", RedisTarget("sentinel", True, (("s1", 26379),), None, "pw", "main", 0)),
        ("redis://h:1/3", RedisTarget("single", False, (), None, None)),
    ],
)
def test_urls_of_every_deployment_parse(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://h:1", "unknown scheme http://"),
        ("redis+cluster://", "no host"),
        ("redis+cluster://a:1,,b:2/", "an empty host"),
        ("redis+cluster://a:99999/", "bad host or port 'a:99999'"),
        ("redis+cluster://a:1/3", "only db 0"),
        ("redis+cluster://a:1/?timeout=3", "query options"),
        ("redis+sentinel://u:hunter2@s1:26379", "no service name"),
        ("redis+sentinel://s1/main/x", "numeric db"),
        ("redis+sentinel://s1/main/0/extra", "numeric db"),
    ],
)
def test_a_bad_url_names_the_url_without_its_password_and_what_is_allowed(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisClusterBroker(url) if "cluster" in url else RedisSentinelBroker(url)
    text = str(caught.value)
    assert why in text
    assert "hunter2" not in text
    assert "redis+sentinel://" in text and "redis+cluster://" in text  # what is allowed
    assert "\n" not in text


def test_the_result_backend_takes_the_same_urls_and_errors() -> None:
    assert RedisResultBackend("redis+cluster://a:1,b:2/").target.kind == "cluster"
    assert RedisResultBackend("rediss+sentinel://s:1/m/1").target.service == "m"
    with pytest.raises(ConfigError, match=r"result_backend.*u:\*\*\*@s1.*no service name"):
        RedisResultBackend("redis+sentinel://u:pw@s1")


def test_each_broker_class_takes_its_own_kind_only() -> None:
    with pytest.raises(ConfigError, match="RedisBroker.*single URL"):
        RedisBroker("redis+cluster://a:1/")
    with pytest.raises(ConfigError, match="RedisClusterBroker.*cluster URL"):
        RedisClusterBroker("redis://a:1/0")
    with pytest.raises(ConfigError, match="RedisSentinelBroker.*sentinel URL"):
        RedisSentinelBroker("redis+cluster://a:1/")


_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_port = st.integers(1, 65535)


_kinds = st.sampled_from(["cluster", "sentinel"])


@given(st.lists(st.tuples(_host, _port), min_size=1, max_size=5), st.booleans(), _kinds)
def test_any_host_list_round_trips(hosts: list[tuple[str, int]], tls: bool, kind: str) -> None:
    scheme = ("rediss+" if tls else "redis+") + kind
    path = "/svc/1" if kind == "sentinel" else "/"
    target = parse_redis_url(f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in hosts) + path)
    assert target.hosts == tuple(hosts)
    assert (target.kind, target.tls) == (kind, tls)
