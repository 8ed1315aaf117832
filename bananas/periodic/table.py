"""The periodic jobs of one app: the ``[[periodic]]`` tables of its configuration plus ``app.periodic(...)`` calls.

Config tables are validated when the app is built (a bad cron expression, time zone or field is a
:class:`~bananas.errors.ConfigError` naming the schedule and the field); job names are checked against the app's
handlers when a scheduler starts (:meth:`PeriodicTable.check_jobs`), the first time the handlers are known. A
config table and an ``app.periodic`` call with the same name: the config wins (operators can change or pause a
schedule without a release), see docs/PERIODIC.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bananas.config import Settings
from bananas.errors import ConfigError, UsageError
from bananas.periodic.schedule import Schedule, ScheduleError

__all__ = ["PeriodicTable"]

CODE = "app.periodic"
"""The source named in errors about schedules declared in code."""


def _config_error(exc: ScheduleError, source: str) -> ConfigError:
    return ConfigError(f"periodic {exc.name!r} {exc.field}", exc.value, source, exc.allowed)


class PeriodicTable:
    """Schedules by name, each with where it came from (``file bananas.toml``, ``env BANANAS_PERIODIC``, …)."""

    def __init__(self) -> None:
        self._schedules: dict[str, tuple[Schedule, str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> PeriodicTable:
        """The ``periodic`` setting's tables, validated."""
        table = cls()
        source = settings.source("periodic")
        for fields in settings["periodic"]:
            try:
                schedule = Schedule.parse(fields)
            except ScheduleError as exc:
                raise _config_error(exc, source) from None
            if schedule.name in table._schedules:
                raise ConfigError(f"periodic {schedule.name!r} name", schedule.name, source, "names must be unique")
            table._schedules[schedule.name] = (schedule, source)
        return table

    def add(self, fields: Mapping[str, Any]) -> Schedule:
        """Declare a schedule in code (``app.periodic``); a configured one of the same name wins."""
        try:
            schedule = Schedule.parse({k: v for k, v in fields.items() if v is not None})
        except ScheduleError as exc:
            raise _config_error(exc, CODE) from None
        existing = self._schedules.get(schedule.name)
        if existing is not None:
            if existing[1] == CODE:
                raise UsageError(f"periodic schedule {schedule.name!r} is already declared")
            return existing[0]
        self._schedules[schedule.name] = (schedule, CODE)
        return schedule

    def adopt(self, other: PeriodicTable) -> None:
        """Take the schedules ``other`` got from code (``app.periodic``) that this table lacks: the CLI rebuilds an
        app with flag overrides and carries its handlers and code schedules over."""
        for name, (schedule, source) in other._schedules.items():
            if source == CODE and name not in self._schedules:
                self._schedules[name] = (schedule, source)

    def check_jobs(self, handlers: Mapping[str, object], when: bool = True) -> None:
        """Every schedule's job has a handler in the app (a scheduler enqueues nothing that cannot run); ``when``
        false skips the check (a worker that runs no scheduler)."""
        for schedule, source in self._schedules.values() if when else ():
            if schedule.job not in handlers:
                known = ", ".join(sorted(handlers)) or "none"
                raise ConfigError(f"periodic {schedule.name!r} job", schedule.job, source,
                                  f"no handler of that name is registered in the app; registered: {known}")

    def get(self, name: str) -> Schedule | None:
        found = self._schedules.get(name)
        return found[0] if found else None

    def source(self, name: str) -> str:
        return self._schedules[name][1]

    def __iter__(self) -> Iterator[Schedule]:
        return iter([schedule for schedule, _ in self._schedules.values()])

    def __len__(self) -> int:
        return len(self._schedules)

    def names(self) -> list[str]:
        return list(self._schedules)
