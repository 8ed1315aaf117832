"""What the metrics of a worker process are told by the settings (``[metrics]``, see docs/CONFIGURATION.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["DIR_ENV", "MetricsConfig"]

DIR_ENV = "BANANAS_METRICS_DIR"
"""Set by a ``--processes N`` supervisor in its children: the per-run directory they write their snapshots to
(the supervisor serves the endpoint; a child serves none)."""


@attrs.frozen
class MetricsConfig:
    """The metrics settings of one worker process.

    Attributes:
        port: ``metrics.port`` (``METRICS_PORT``); 0 serves no endpoint.
        bind: ``metrics.bind`` (``METRICS_BIND``).
        log_interval: ``metrics.log_interval`` (``METRICS_LOG_INTERVAL``): seconds between ``System metrics`` lines.
        directory: The supervisor's snapshot directory when this process is one of its children (``None`` otherwise).
    """

    port: int = 0
    bind: str = "127.0.0.1"
    log_interval: float = 30.0
    directory: str | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], env: Mapping[str, str] | None = None) -> MetricsConfig:
        directory = (os.environ if env is None else env).get(DIR_ENV) or None
        return cls(settings["metrics.port"], settings["metrics.bind"], settings["metrics.log_interval"], directory)
