"""What ``bananas es-init`` installs: the index template (the seed's mapping on the flat event model's field names)
and the ILM policy (hot rollover 50 GB / 1 day, warm after 7 days, cold after 30, delete after 90).

The seed's mapping names three fields differently from the event model every tier writes; they are kept as field
aliases so that both spellings work in queries: ``@timestamp`` → ``time``, ``message`` → ``msg``, ``job_priority`` →
``priority``. Other bound context (``redis_operation``, ``http_method`` … and anything a handler binds) is mapped by
dynamic templates: strings as ``keyword``.

Daily indices (``<prefix>-YYYY.MM.DD``) already roll over by name, so the template marks each new index
``index.lifecycle.indexing_complete``: ILM skips the hot phase's rollover step (which needs a write alias) and ages
the index from its creation through warm, cold and delete. The rollover conditions stay in the policy for whoever
writes through an alias or a data stream.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAPPING_FIELDS", "ilm_policy", "index_pattern", "index_template", "policy_name"]

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_TEXT_AND_KEYWORD = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}}

MAPPING_FIELDS: dict[str, dict[str, Any]] = {
    "time": {"type": "date"},
    "level": {"type": "keyword"},
    "msg": _TEXT_AND_KEYWORD,
    "component": {"type": "keyword"},
    "log_source": {"type": "keyword"},
    "worker_id": {"type": "keyword"},
    "pool_id": {"type": "keyword"},
    "worker_type": {"type": "keyword"},
    "job_id": {"type": "keyword"},
    "job_name": {"type": "keyword"},
    "priority": {"type": "keyword"},
    "queue": {"type": "keyword"},
    "attempt": {"type": "integer"},
    "duration_ms": {"type": "double"},
    "wait_ms": {"type": "double"},
    "error": _TEXT_AND_KEYWORD,
    "traceback": {"type": "text"},
    # the seed's other fields
    "redis_operation": {"type": "keyword"},
    "http_method": {"type": "keyword"},
    "http_status": {"type": "integer"},
    # the seed's names for three of the model's fields
    "@timestamp": {"type": "alias", "path": "time"},
    "message": {"type": "alias", "path": "msg"},
    "job_priority": {"type": "alias", "path": "priority"},
}
"""Field → mapping: every field of the flat event model, the seed's extras, and aliases for the seed's names."""


def index_pattern(prefix: str) -> str:
    return f"{prefix}-*"


def policy_name(prefix: str) -> str:
    return f"{prefix}-policy"


def ilm_policy() -> dict[str, Any]:
    """The ``policy`` body of ``PUT _ilm/policy/<prefix>-policy``."""
    return {
        "phases": {
            "hot": {
                "min_age": "0ms",
                "actions": {
                    "rollover": {"max_primary_shard_size": "50gb", "max_age": "1d"},
                    "set_priority": {"priority": 100},
                },
            },
            "warm": {
                "min_age": "7d",
                "actions": {
                    "shrink": {"number_of_shards": 1},
                    "forcemerge": {"max_num_segments": 1},
                    "set_priority": {"priority": 50},
                },
            },
            "cold": {"min_age": "30d", "actions": {"set_priority": {"priority": 0}}},
            "delete": {"min_age": "90d", "actions": {"delete": {}}},
        },
        "_meta": {"managed_by": "bananas es-init"},
    }


def index_template(prefix: str) -> dict[str, Any]:
    """The body of ``PUT _index_template/<prefix>`` (``index_patterns``, ``template``, ``priority``, ``_meta``)."""
    return {
        "index_patterns": [index_pattern(prefix)],
        "priority": 200,
        "template": {
            "settings": {
                "index.lifecycle.name": policy_name(prefix),
                "index.lifecycle.indexing_complete": True,
                "index.number_of_shards": 1,
                "index.refresh_interval": "5s",
            },
            "mappings": {
                "dynamic_templates": [
                    {"strings_as_keywords": {"match_mapping_type": "string", "mapping": _KEYWORD}},
                ],
                "properties": MAPPING_FIELDS,
            },
        },
        "_meta": {"managed_by": "bananas es-init", "description": "Bananas logs: the flat event model"},
    }
