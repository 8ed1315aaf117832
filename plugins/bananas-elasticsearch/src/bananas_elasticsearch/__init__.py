"""Log tier ``elasticsearch``: every record (the flat event model) bulk-indexed in the background into daily indices
``<prefix>-YYYY.MM.DD``, gzip on the wire, behind a circuit breaker that falls back to stderr while Elasticsearch is
down or rejecting; ``bananas es-init`` installs the index template and the ILM policy.

Enable with ``LOG_ES_ENABLED=true``; self-managed clusters with ``LOG_ES_ADDRESSES`` (and ``LOG_ES_USERNAME`` /
``LOG_ES_PASSWORD``), Elastic Cloud with ``LOG_ES_CLOUD_ID`` and ``LOG_ES_API_KEY``. See ``docs/LOG_TIERS.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from elasticsearch import Elasticsearch
from elasticsearch.serializer import CompatibilityModeNdjsonSerializer

from bananas.plugin_api import ConfigError, KeySpec, LogSinkSpec, Register, SinkConfig, hookimpl, setting
from bananas_elasticsearch.tier import EsTier

__all__ = ["SETTINGS", "EsTier", "build_client", "elasticsearch_sink"]

_LEVELS = ("debug", "info", "warn", "warning", "error")

SETTINGS: tuple[KeySpec, ...] = (
    setting("logging.elasticsearch.enabled", "bool", False, "Ship logs to Elasticsearch.", "LOG_ES_ENABLED"),
    setting("logging.elasticsearch.addresses", "list", ("http://localhost:9200",),
            "Elasticsearch node URLs (self-managed; ignored when cloud_id is set).", "LOG_ES_ADDRESSES"),
    setting("logging.elasticsearch.username", "str", None, "Basic-auth user name.", "LOG_ES_USERNAME"),
    setting("logging.elasticsearch.password", "str", None, "Basic-auth password.", "LOG_ES_PASSWORD", secret=True),
    setting("logging.elasticsearch.cloud_id", "str", None, "Elastic Cloud deployment id (instead of addresses).",
            "LOG_ES_CLOUD_ID"),
    setting("logging.elasticsearch.api_key", "str", None, "API key (Elastic Cloud or self-managed; wins over "
            "username/password).", "LOG_ES_API_KEY", secret=True),
    setting("logging.elasticsearch.ca_certs", "str", None, "CA bundle that signed the cluster's certificate "
            "(self-managed TLS).", "LOG_ES_CA_CERTS"),
    setting("logging.elasticsearch.index_prefix", "str", "bananas-logs", "Index name prefix: daily indices "
            "PREFIX-YYYY.MM.DD.", "LOG_ES_INDEX_PREFIX"),
    setting("logging.elasticsearch.level", "enum", None, "Elasticsearch log level (default: the console's "
            "LOG_LEVEL).", "LOG_ES_LEVEL", choices=_LEVELS),
    setting("logging.elasticsearch.flush_bytes", "int", 5242880, "Send a bulk request once this many bytes are "
            "buffered.", "LOG_ES_FLUSH_BYTES", minimum=1),
    setting("logging.elasticsearch.flush_interval", "duration", 10.0, "Send what is buffered at least this often.",
            "LOG_ES_FLUSH_INTERVAL", minimum=0, min_exclusive=True),
    setting("logging.elasticsearch.num_workers", "int", 2, "Bulk requests in flight at once (threads).",
            "LOG_ES_NUM_WORKERS", minimum=1, maximum=64),
)
"""The settings of the Elasticsearch tier (documented in this package's README and docs/CONFIGURATION.md)."""


COMPRESS_LEVEL = 1
"""gzip level of the configured tier's bulk bodies: ~2 µs of CPU per record, where the client's own (level 9) costs
~9 µs, for ~25 % more bytes on the wire."""


class _PrecompressedNdjson(CompatibilityModeNdjsonSerializer):
    """The client's ndjson serializer, but a ``bytes`` body goes as it is: the tier's body is gzip-compressed already,
    and the client's own serializer would add a newline after it."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes):
            return data
        return super().dumps(data)  # type: ignore[no-any-return]


def build_client(options: Mapping[str, Any], *, request_timeout: float = 10.0,
                 precompressed: bool = False) -> Elasticsearch:
    """The official client for the tier's table: Cloud id or addresses, API key or basic auth, gzip requests
    (``precompressed``: bodies come gzip-compressed already, as the tier's do — the client neither compresses nor
    touches a ``bytes`` body)."""
    kwargs: dict[str, Any] = {"http_compress": not precompressed, "request_timeout": request_timeout,
                              "max_retries": 1, "retry_on_timeout": False}
    if precompressed:
        kwargs["serializers"] = {"application/x-ndjson": _PrecompressedNdjson(),
                                 "application/vnd.elasticsearch+x-ndjson": _PrecompressedNdjson()}
    if options.get("api_key"):
        kwargs["api_key"] = options["api_key"]
    elif options.get("username"):
        kwargs["basic_auth"] = (options["username"], options.get("password") or "")
    if options.get("ca_certs"):
        kwargs["ca_certs"] = options["ca_certs"]
    cloud_id = options.get("cloud_id")
    try:
        if cloud_id:
            return Elasticsearch(cloud_id=cloud_id, **kwargs)
        return Elasticsearch(list(options.get("addresses") or ("http://localhost:9200",)), **kwargs)
    except ValueError as exc:
        key, value = ("logging.elasticsearch.cloud_id", cloud_id) if cloud_id else (
            "logging.elasticsearch.addresses", ",".join(options.get("addresses") or ()))
        raise ConfigError(key, value, "config", f"the Elasticsearch client rejects it: {exc}") from None


def elasticsearch_sink(options: Mapping[str, Any]) -> SinkConfig:
    """Build the tier from its ``[logging.elasticsearch]`` table (``level`` already a loguru level name)."""
    tier = EsTier(
        build_client(options, precompressed=True),
        compress_level=COMPRESS_LEVEL,
        index_prefix=str(options.get("index_prefix") or "bananas-logs"),
        flush_bytes=int(options.get("flush_bytes") or 5242880),
        flush_interval=float(options.get("flush_interval") or 10.0),
        num_workers=int(options.get("num_workers") or 2),
    )
    return SinkConfig(
        sink=tier.sink,
        level=str(options.get("level") or "INFO"),
        options={"format": "{message}", "colorize": False, "catch": True},
        close=tier.close,
        record_sink=tier.put,  # the kernel's route: job_logger and stdlib records without loguru's record building
    )


@hookimpl
def bananas_register_log_sinks(register: Register[LogSinkSpec]) -> None:
    register(LogSinkSpec(name="elasticsearch", factory=elasticsearch_sink,
                         summary="bulk indexing into daily Elasticsearch indices, with a circuit breaker"))


@hookimpl
def bananas_register_settings(register: Register[KeySpec]) -> None:
    for spec in SETTINGS:
        register(spec)


@hookimpl
def bananas_add_commands(cli: click.Group) -> None:
    from bananas_elasticsearch.cli import es_init

    cli.add_command(es_init)
