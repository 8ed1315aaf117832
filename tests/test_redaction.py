"""``redact_url``: passwords never survive, in any URL form, while user names, hosts and other text stay readable."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bananas.config import REDACTED, redact_url

# printable, no whitespace: a raw (unencoded) password cannot hold whitespace and still be one URL token
PASSWORDS = st.text(alphabet=[c for c in string.printable if not c.isspace()], min_size=4, max_size=40)
USERS = st.sampled_from(["", "bob", "worker-1", "a.b_c"])
SCHEMES = st.sampled_from(["redis", "rediss", "redis+sentinel", "amqp", "https", "unix"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host", "redis://user:***@host"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("memory://", "memory://"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),
        ("redis://bob:p@ss:w/rd@host:1/0", "redis://bob:***@host:1/0"),
        ("redis://host/0?password=PW", "redis://host/0?password=***"),
        ("redis://host/0?db=1&PASSWORD=PW&x=1", "redis://host/0?db=1&PASSWORD=***&x=1"),
        ("redis://host/0?pass=PW", "redis://host/0?pass=***"),
        ("redis://127.0.0.1:1/0?password=s3cr@t", "redis://127.0.0.1:1/0?password=***"),
        ("redis://:a@b@host/0?password=c@d", "redis://:***@host/0?password=***"),
        ("redis://host/0?token=PW", "redis://host/0?token=***"),
        ("rediss://u:pw@host:6380/0", "rediss://u:***@host:6380/0"),
        (
            "redis+sentinel://:pw@h1:26379,h2:26379,h3/mymaster?sentinel_password=spw&db=0",
            "redis+sentinel://:***@h1:26379,h2:26379,h3/mymaster?sentinel_password=***&db=0",
        ),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"),
        (
            "https://elastic:es-pw@es1:9200,https://es2:9200",
            "https://elastic:***@es1:9200,https://es2:9200",
        ),
        (
            "broker redis://:a@h1/0 unavailable; backend 'rediss://u:b@h2/1' (see amqp://x:y@z)",
            "broker redis://:***@h1/0 unavailable; backend 'rediss://u:***@h2/1' (see amqp://x:***@z)",
        ),
    ],
)
def test_known_forms(text, expected):
    assert redact_url(text) == expected


def test_repr_of_a_broker_keeps_the_user_name_and_the_host():
    assert redact_url("RedisBroker('redis://bob:s3cret@redis.internal:6379/0')") == (
        "RedisBroker('redis://bob:***@redis.internal:6379/0')"
    )


@given(scheme=SCHEMES, user=USERS, password=PASSWORDS)
def test_a_raw_userinfo_password_never_appears(scheme, user, password):
    url = f"{scheme}://{user}:{password}@host.example:6379/0"
    expected = f"{scheme}://{user}:{REDACTED}@host.example:6379/0"
    assume(password not in expected)
    out = redact_url(url)
    assert password not in out
    assert out == expected


@given(scheme=SCHEMES, user=USERS, password=PASSWORDS)
def test_an_encoded_userinfo_password_never_appears(scheme, user, password):
    encoded = quote(password, safe="")
    url = f"{scheme}://{user}:{encoded}@h1:26379,h2:26379/0"
    expected = f"{scheme}://{user}:{REDACTED}@h1:26379,h2:26379/0"
    assume(password not in expected and encoded not in expected)
    out = redact_url(url)
    assert password not in out and encoded not in out
    assert out == expected


@given(
    scheme=SCHEMES,
    name=st.sampled_from(["password", "Password", "PASS", "token", "sentinel_password", "auth_token"]),
    password=PASSWORDS,
)
def test_a_query_password_never_appears(scheme, name, password):
    encoded = quote(password, safe="")
    url = f"{scheme}://host:1/0?db=2&{name}={encoded}&ssl=true"
    expected = f"{scheme}://host:1/0?db=2&{name}={REDACTED}&ssl=true"
    assume(password not in expected and encoded not in expected)
    out = redact_url(url)
    assert password not in out and encoded not in out
    assert out == expected


@given(
    scheme=SCHEMES,
    name=st.sampled_from(["password", "PASSWORD", "sentinel_password"]),
    password=st.text(alphabet=[c for c in string.printable if not c.isspace() and c != "&"], min_size=4, max_size=40),
)
def test_a_raw_query_password_never_leaks_any_part(scheme, name, password):
    # unencoded, with "@", ":", "/" and "?" in it: nothing of it may survive, and the host stays readable
    url = f"{scheme}://host.example:1/0?{name}={password}"
    assert redact_url(url) == f"{scheme}://host.example:1/0?{name}={REDACTED}"


@given(first=PASSWORDS, second=PASSWORDS, third=PASSWORDS)
def test_several_urls_in_one_message(first, second, third):
    text = (
        f"redis broker redis://:{first}@h1:6379/0 unavailable during enqueue: "
        f"result backend 'rediss://bob:{second}@h2/1' and unix:///s.sock?password={quote(third, safe='')} failed"
    )
    skeleton = redact_url(text)
    for password in (first, second, third, quote(third, safe="")):
        assume(password not in "redis broker redis://:***@h1:6379/0 unavailable during enqueue: result backend "
               "'rediss://bob:***@h2/1' and unix:///s.sock?password=*** failed")
        assert password not in skeleton
    assert "bob:***@h2" in skeleton or "bob" in skeleton
