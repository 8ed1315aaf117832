"""The fields of the ``System metrics`` log line (the seed's names and formats), logged every
``METRICS_LOG_INTERVAL`` by each worker process (see :mod:`bananas.worker.metrics`)."""

from __future__ import annotations

from typing import Any

from bananas.metrics.stats import JobStats, percentile

__all__ = ["format_duration", "format_percent", "system_metrics_fields"]


def format_percent(ratio: float, digits: int = 1) -> str:
    """``0.783`` → ``"78.3%"``; ``format_percent(0.0049, 2)`` → ``"0.49%"`` (the seed's error rate)."""
    return f"{ratio * 100:.{digits}f}%"


def format_duration(seconds: float) -> str:
    """``8130`` → ``"2h15m30s"``; ``59.6`` → ``"59s"`` (whole seconds; days are written as hours)."""
    total = int(max(seconds, 0.0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def system_metrics_fields(stats: JobStats, utilization: float, uptime: float, running: int) -> dict[str, Any]:
    """The line's fields: counts since start (``jobs_processed`` = completed + failed, where failed counts failed
    handler runs and jobs no handler ran for), the average run time since start, ``worker_utilization`` over the
    interval, ``error_rate`` = failed / processed since start, the run-time percentiles of the interval and the
    uptime."""
    recent = stats.take_recent()
    processed = stats.processed
    return {
        "jobs_processed": processed,
        "jobs_completed": stats.completed,
        "jobs_failed": stats.failures,
        "jobs_retried": stats.retried,
        "jobs_dead": stats.dead,
        "jobs_running": running,
        "avg_duration_ms": round(stats.duration_sum / stats.runs * 1000) if stats.runs else 0,
        "p50_duration_ms": round(percentile(recent, 0.50) * 1000, 1),
        "p95_duration_ms": round(percentile(recent, 0.95) * 1000, 1),
        "p99_duration_ms": round(percentile(recent, 0.99) * 1000, 1),
        "worker_utilization": format_percent(utilization),
        "error_rate": format_percent(stats.failures / processed if processed else 0.0, 2),
        "uptime": format_duration(uptime),
    }
