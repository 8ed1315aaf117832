"""The public plugin API: everything a plugin package imports from the kernel, and nothing else.

Plugins (the packages under ``plugins/`` and third-party ones) write ``from bananas.plugin_api import …``. The names
below are the kernel's contract with them: they change only with a note in ``docs/PLUGINS.md`` ("0.1 → 0.2"). Any
other kernel module is an implementation detail and may move; ``tests/test_architecture.py`` fails when a package
under ``plugins/`` imports one. (Tests of a plugin may also use ``bananas.testing``, the conformance kits.)

Grouped by what a plugin does:

* every plugin: :data:`hookimpl`, :class:`Register`, :func:`setting` / :class:`KeySpec` (declared settings) and the
  errors;
* brokers: the :class:`Broker` protocol, its optional capabilities (``Supports…``; :class:`LeaderLease` is what
  ``SupportsSchedules.current_leader`` returns, :data:`CANCEL_STATES` what ``SupportsCancellation.finish`` takes,
  :class:`ReadyType` what ``SupportsReadyTypes.ready_types`` returns; :data:`UNTYPED` is the job type of an
  envelope without one), options and the records it hands out;
* result backends: :class:`ResultBackend`, :class:`ResultBackendSpec` and the TTL helpers;
* log sinks: :class:`LogSinkSpec`, :class:`SinkConfig` and the one event model (:func:`flat_record`,
  :func:`json_line`, :data:`CONTEXT_FIELDS`);
* serializers: :class:`SerializerSpec`, the job model (:class:`Job`, :data:`JOB_FIELDS`), the kernel's
  :class:`JsonSerializer` (to build on) and the typed values every serializer carries (:mod:`bananas.values`:
  :func:`to_json` / :func:`from_json`, :class:`JsonTagger` and :data:`JSON_TAG` for JSON, :func:`to_text` /
  :func:`from_text` and :data:`MSGPACK_EXT` for extension types);
* routers and worker modes: :class:`Router`, :class:`RouterSpec`, :class:`PoolPlan`, :class:`WorkerPlan`,
  :class:`WorkerModeSpec` and :class:`Settings` (what a mode reads);
* worker plugins: :class:`WorkerInfo`, :class:`PoolInfo`, :class:`Duty`.
"""

from __future__ import annotations

from bananas.app import Bananas
from bananas.broker import (
    ADMIN,
    CAPABILITIES,
    MAINTENANCE,
    Broker,
    BrokerCapabilities,
    BrokerOptions,
    BrokerSpec,
    DeadLetter,
    Delivery,
    Envelope,
    JobRecord,
    LeaderLease,
    Progress,
    QueueDepth,
    RecordState,
    SupportsAckAndFetch,
    SupportsAdmin,
    SupportsCancellation,
    SupportsEnqueueSync,
    SupportsEnqueueWithHints,
    SupportsMaintenance,
    SupportsProgress,
    SupportsSchedules,
    SupportsWorkerRegistry,
    capabilities,
    require_admin,
    require_maintenance,
)
from bananas.broker_extras import CANCEL_STATES
from bananas.broker_types import UNTYPED, ReadyType, SupportsReadyTypes
from bananas.builtin.json_serializer import JsonSerializer
from bananas.config import Settings
from bananas.config_schema import KeySpec, redact_url, setting
from bananas.errors import (
    BananasError,
    BrokerError,
    BrokerMisconfigured,
    BrokerUnavailable,
    ConfigError,
    LeaseLost,
    PluginError,
    SerializationError,
    UsageError,
)
from bananas.hookspecs import hookimpl
from bananas.job import JOB_FIELDS, Job, Priority, Status
from bananas.log_record import CONTEXT_FIELDS, FIXED_FIELDS, flat_record, json_line
from bananas.logsink import LogSinkSpec, SinkConfig
from bananas.registry import Register
from bananas.result_backend import (
    DEFAULT_RESULT_TTL,
    ResultBackend,
    ResultBackendSpec,
    parse_ttl,
)
from bananas.router import Router, RouterSpec
from bananas.serializer import Serializer, SerializerSpec
from bananas.values import JSON_TAG, MSGPACK_EXT, JsonTagger, from_json, from_text, may_hold_tags, to_json, to_text
from bananas.worker import Duty, PoolInfo, WorkerInfo
from bananas.worker_mode import PoolPlan, WorkerModeSpec, WorkerPlan

__all__ = [
    "ADMIN",
    "CAPABILITIES",
    "CANCEL_STATES",
    "CONTEXT_FIELDS",
    "DEFAULT_RESULT_TTL",
    "FIXED_FIELDS",
    "JOB_FIELDS",
    "JSON_TAG",
    "MSGPACK_EXT",
    "MAINTENANCE",
    "Bananas",
    "BananasError",
    "Broker",
    "BrokerCapabilities",
    "BrokerError",
    "BrokerMisconfigured",
    "BrokerOptions",
    "BrokerSpec",
    "BrokerUnavailable",
    "ConfigError",
    "DeadLetter",
    "Delivery",
    "Duty",
    "Envelope",
    "Job",
    "JsonSerializer",
    "JsonTagger",
    "JobRecord",
    "Progress",
    "KeySpec",
    "LeaderLease",
    "LeaseLost",
    "LogSinkSpec",
    "PluginError",
    "PoolInfo",
    "PoolPlan",
    "Priority",
    "QueueDepth",
    "ReadyType",
    "RecordState",
    "Register",
    "ResultBackend",
    "ResultBackendSpec",
    "Router",
    "RouterSpec",
    "SerializationError",
    "Serializer",
    "SerializerSpec",
    "Settings",
    "SinkConfig",
    "Status",
    "SupportsAckAndFetch",
    "SupportsAdmin",
    "SupportsCancellation",
    "SupportsProgress",
    "SupportsReadyTypes",
    "SupportsEnqueueSync",
    "SupportsEnqueueWithHints",
    "SupportsMaintenance",
    "SupportsSchedules",
    "SupportsWorkerRegistry",
    "UNTYPED",
    "UsageError",
    "WorkerInfo",
    "WorkerModeSpec",
    "WorkerPlan",
    "capabilities",
    "flat_record",
    "from_json",
    "from_text",
    "hookimpl",
    "json_line",
    "may_hold_tags",
    "parse_ttl",
    "redact_url",
    "require_admin",
    "require_maintenance",
    "setting",
    "to_json",
    "to_text",
]
