"""Periodic jobs (cron): schedules, the tick calculation, the leader's ticker and the scheduler's status.

See docs/PERIODIC.md. :class:`Schedule` is one validated schedule, :class:`PeriodicTable` an app's schedules,
:func:`periodic_duties` the leader's ticker for the worker, :func:`scheduler_status` what ``bananas status`` shows.
"""

from bananas.periodic.schedule import Schedule
from bananas.periodic.status import scheduler_status, scheduler_status_async
from bananas.periodic.table import PeriodicTable
from bananas.periodic.ticker import periodic_duties

__all__ = ["PeriodicTable", "Schedule", "periodic_duties", "scheduler_status", "scheduler_status_async"]
