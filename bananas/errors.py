"""The error tree of Bananas.

Every error raised on purpose derives from :class:`BananasError`, so callers can catch one class. Messages name
the thing, the value, where it came from and what is allowed (see ``docs/CONFIGURATION.md``).
"""

from __future__ import annotations

__all__ = [
    "BananasError",
    "BrokerError",
    "BrokerMisconfigured",
    "BrokerUnavailable",
    "ConfigError",
    "DecodeError",
    "DuplicatePlugin",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "LeaseLost",
    "PluginError",
    "ResultTimeout",
    "SerializationError",
    "UnknownJob",
    "UnknownPlugin",
    "UnstorableResult",
    "UsageError",
]


class BananasError(Exception):
    """Base class of every error Bananas raises on purpose."""


class UsageError(BananasError):
    """A user mistake (bad flag, bad file, bad value): the CLI prints one line and exits 2."""


class ConfigError(UsageError):
    """An invalid configuration value; the message names the key, the value, its source and what is allowed."""

    def __init__(self, key: str, value: object, source: str, allowed: str) -> None:
        self.key = key
        self.value = value
        self.source = source
        self.allowed = allowed
        super().__init__(f"invalid {key} = {value!r} (from {source}): {allowed}")


class PluginError(UsageError):
    """A plugin could not be loaded or registered."""


class DuplicatePlugin(PluginError):
    """Two plugins registered the same name (or broker scheme)."""


class UnknownPlugin(PluginError):
    """A configured name that no installed plugin provides."""


class UnknownJob(UsageError):
    """A job name that has no registered handler in this app."""


class SerializationError(BananasError):
    """Bytes could not be encoded or decoded. ``job_id`` is set when it could still be read."""

    def __init__(self, reason: str, data: bytes | None = None, job_id: str | None = None) -> None:
        self.reason = reason
        self.data = data
        self.job_id = job_id
        super().__init__(reason if job_id is None else f"{reason} (job {job_id})")


DecodeError = SerializationError
"""Alias kept for readers who know dramatiq's name for the same thing."""


class BrokerError(BananasError):
    """A broker operation failed."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (within the configured timeout)."""


class BrokerMisconfigured(BrokerUnavailable):
    """The broker (or result backend) answered, but cannot be used as configured: wrong password or ACL user, not
    that kind of server, TLS mismatch. Retrying cannot help, so a worker waiting for its broker fails at once and
    the CLI exits 2 (a configuration error; a supervisor does not restart it)."""


class LeaseLost(BrokerError):
    """A worker tried to settle a delivery whose lease it no longer holds (stale fencing token)."""


class JobNotFound(BananasError):
    """No job (or result) with this id is known."""


class ResultNotStored(JobNotFound):
    """The job completed, but no result was stored for it (``result_ttl=0``, an expired result, or a worker that
    stores no results): waiting longer cannot help, so waits end with this at once."""


class ResultTimeout(BananasError):
    """Waiting for a result timed out; the job itself keeps running. ``job_id`` names it (``None`` only when raised
    by code that did not know it)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class JobFailed(BananasError):
    """The job failed for good; carries the remote error type, message and traceback text."""

    def __init__(self, job_id: str, error_type: str, message: str, traceback: str | None = None) -> None:
        self.job_id = job_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"job {job_id} failed: {error_type}: {message}")


class JobCancelled(BananasError):
    """The job was cancelled (``client.cancel``): it never ran, or its run was stopped. No result exists.

    Inside a worker it is also the error a stopped run ends with (``current_job().cancelled`` was true)."""

    status = "cancelled"

    def __init__(self, job_id: str, message: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message or f"job {job_id} was {self.status}; it has no result")


class JobExpired(JobCancelled):
    """The job was not started before its ``expires`` time and was dropped unrun (status ``expired``)."""

    status = "expired"


class UnstorableResult(JobFailed):
    """The job completed (its handler ran once and the job was acknowledged), but its return value could not be
    encoded, so the stored result is this error instead: ``message`` says why (``"result of send_report cannot be
    stored: …"``). A :class:`JobFailed` so that code catching failures sees it; the job is not retried."""

    ERROR_TYPE = "UnstorableResult"

    def __init__(self, job_id: str, message: str, traceback: str | None = None) -> None:
        super().__init__(job_id, self.ERROR_TYPE, message, traceback)
        self.args = (f"job {job_id} completed, but {message}",)
