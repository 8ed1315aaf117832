"""The worker runtime: executes a :class:`~bananas.worker_mode.WorkerPlan`."""

from bananas.worker.context import Duty, PoolInfo, WorkerContext, WorkerInfo
from bananas.worker.interrupt import JobTimeout
from bananas.worker.runtime import Worker

__all__ = ["Duty", "JobTimeout", "PoolInfo", "Worker", "WorkerContext", "WorkerInfo"]
