"""Bananas: a distributed task queue for Python.

Import what you need from here: ``Bananas`` (the app), ``Client`` / ``AsyncClient`` (producer-only processes),
``job_logger`` (a logger with loguru's API bound to the running job, for handlers), ``current_job`` / ``Retry`` /
``Reject`` (the handler API: docs/HANDLERS.md) and ``hookimpl`` (for plugins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bananas.control import Reject, Retry
from bananas.errors import (
    BananasError,
    BrokerError,
    BrokerMisconfigured,
    BrokerUnavailable,
    ConfigError,
    DuplicatePlugin,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    PluginError,
    ResultNotStored,
    ResultTimeout,
    SerializationError,
    UnknownPlugin,
    UnstorableResult,
)
from bananas.hookspecs import hookimpl
from bananas.job import Job, Priority, Status
from bananas.registry import Register

if TYPE_CHECKING:
    from bananas.app import Bananas, JobHandle
    from bananas.client import AsyncClient, Client

__all__ = [
    "AsyncClient",
    "Bananas",
    "BananasError",
    "BrokerError",
    "BrokerMisconfigured",
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "DuplicatePlugin",
    "Job",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "ResultNotStored",
    "PluginError",
    "Priority",
    "Register",
    "Reject",
    "Retry",
    "ResultTimeout",
    "SerializationError",
    "Status",
    "UnknownPlugin",
    "UnstorableResult",
    "__version__",
    "current_job",
    "hookimpl",
    "job_logger",
]


def __getattr__(name: str) -> Any:
    if name in ("Bananas", "JobHandle"):
        from bananas import app

        return getattr(app, name)
    if name in ("Client", "AsyncClient"):
        from bananas import client

        return getattr(client, name)
    if name == "current_job":
        from bananas.job_context import current_job

        return current_job
    if name == "job_logger":
        from bananas.log_context import job_logger

        return job_logger
    if name == "__version__":
        from importlib.metadata import version

        from bananas.config_kernel import KERNEL

        return version(KERNEL)
    raise AttributeError(f"module 'bananas' has no attribute {name!r}")
