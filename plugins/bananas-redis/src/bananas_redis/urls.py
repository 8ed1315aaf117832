"""Redis URLs of the three deployments: one node, a Redis Cluster, a Sentinel-managed master.

======================================================================  ==============================================
URL                                                                     deployment
======================================================================  ==============================================
``redis://[user:password@]host[:port][/db]``, ``rediss://…``            one node (or a proxy); redis-py's own parser
``redis+cluster://[user:password@]host[:port][,host[:port]…][/]``       Redis Cluster: the hosts are seeds, the
                                                                        client learns the slot map from them
``redis+sentinel://[user:password@]host[:port][,host[:port]…]/<service>[/<db>]``  Sentinel: the hosts are
                                                                        sentinels, ``<service>`` the monitored
                                                                        master's name (``sentinel monitor <service>``)
======================================================================  ==============================================

``rediss+cluster://`` and ``rediss+sentinel://`` are the TLS forms: every connection (data nodes and sentinels) uses
TLS with the ``ssl_*`` options. ``user:password`` (percent-encoded) authenticate to the data nodes, as on one node
(an ACL user or ``requirepass``); sentinels are reached without credentials. The default port is 6379 for cluster
seeds and 26379 for sentinels. A cluster has only db 0; options go in ``[broker_options]`` or
``[result_backend_options]``, never in the query string.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs

from bananas.plugin_api import ConfigError, redact_url

__all__ = ["ALLOWED", "SCHEMES", "RedisTarget", "parse_redis_url"]

SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")
"""Every scheme the plugin serves (broker and result backend)."""

ALLOWED = (
    "a redis://[user:password@]host[:port][/db] URL, redis+cluster://[user:password@]host[:port][,host[:port]...]/ "
    "(Redis Cluster seeds), redis+sentinel://[user:password@]host[:port][,host[:port]...]/<service>[/<db>] "
    "(sentinels and the master's name), or their TLS forms rediss://, rediss+cluster://, rediss+sentinel://"
)
"""What a Redis URL may look like (the text of every URL error)."""

_DEFAULT_PORT = {"single": 6379, "cluster": 6379, "sentinel": 26379}


@attrs.frozen
class RedisTarget:
    """A parsed URL. ``kind`` is ``"single"``, ``"cluster"`` or ``"sentinel"``; ``hosts`` are the node (single),
    the seeds (cluster) or the sentinels (sentinel); ``service`` is the sentinel master's name."""

    kind: str
    tls: bool
    hosts: tuple[tuple[str, int], ...]  # empty for a single node: redis-py reads its URL itself
    username: str | None = None
    password: str | None = None
    service: str | None = None
    db: int = 0


def _host_port(item: str, default: int, bad: object) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:6379
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad  # type: ignore[misc]
        port_text = rest[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise bad  # type: ignore[misc]
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad  # type: ignore[misc]
    return host, int(port_text)


def parse_redis_url(url: str, key: str = "broker", source: str = "redis") -> RedisTarget:
    """Parse a Redis URL of any deployment; a bad one is a :class:`ConfigError` naming ``key``, the URL (password
    redacted), ``source`` and what is allowed."""

    def bad(why: str) -> ConfigError:
        return ConfigError(key, redact_url(url), source, f"{why}; expected {ALLOWED}")

    if not isinstance(url, str):
        raise bad("not a string")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {scheme + '://' if scheme else '(none)'}")
    tls = scheme.startswith("rediss")
    kind = scheme.partition("+")[2] or "single"
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if kind == "single":  # redis-py parses it when the pools are made (as before this module existed)
        return RedisTarget("single", tls, (), username, password)
    if parts.fragment:
        raise bad("a fragment (#...) is not allowed")
    if parts.query:
        raise bad(f"query options ({parts.query.split('=')[0]}=...) are not read: put options in the options table")
    if not hostlist:
        raise bad("no host")
    items = [item.strip() for item in hostlist.split(",")]
    if any(not item for item in items):
        raise bad("an empty host in the host list")
    hosts = tuple(_host_port(item, _DEFAULT_PORT[kind], bad(f"bad host or port {item!r}")) for item in items)
    path = [segment for segment in parts.path.split("/") if segment]
    if kind == "cluster":
        if path and path != ["0"]:
            raise bad("a Redis Cluster has only db 0: no path after the hosts")
        return RedisTarget("cluster", tls, hosts, username, password)
    if not path:
        raise bad("no service name: redis+sentinel://host:port/<service>[/<db>]")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise bad("the path must be /<service>[/<db>] with a numeric db")
    db = int(path[1]) if len(path) > 1 else 0
    return RedisTarget("sentinel", tls, hosts, username, password, unquote(path[0]), db)
