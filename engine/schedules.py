"""Schedules for beat: ``schedule`` (every N seconds) and ``crontab`` (Celery's syntax).

Each answers one question, ``next_after(moment) -> datetime``: the first due time strictly
after ``moment`` (an aware datetime, in the app's ``timezone``). Beat owns when to ask and
what to remember; nothing here touches Redis or the clock.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable
from zoneinfo import ZoneInfo

#: how far ``crontab.next_after`` searches before deciding the expression never matches
#: (Feb 29 on a Monday needs up to 28 years)
SEARCH_YEARS = 30

_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTH_NAMES = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7,
                "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}


class schedule:
    """Every ``run_every`` seconds (a number or a ``timedelta``), counted from the last run."""

    def __init__(self, run_every: float | _dt.timedelta) -> None:
        seconds = run_every.total_seconds() if isinstance(run_every, _dt.timedelta) \
            else float(run_every)
        if seconds <= 0:
            raise ValueError(f"a schedule needs a positive interval, got {run_every!r}")
        self.seconds = seconds
        self.run_every = _dt.timedelta(seconds=seconds)

    def next_after(self, moment: _dt.datetime) -> _dt.datetime:
        return moment + self.run_every

    def last_slot(self, due: _dt.datetime, now: _dt.datetime) -> _dt.datetime:
        """The latest slot at or before ``now`` on the grid that starts at ``due``: what a
        late run stands for, so that a missed stretch fires once and the grid doesn't drift."""
        if now <= due:
            return due
        missed = int((now - due).total_seconds() // self.seconds)
        return due + missed * self.run_every

    def __repr__(self) -> str:
        return f"<schedule every {self.seconds:g}s>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)


class crontab:
    """Cron fields as in Celery: ``"*"``, ``"*/15"``, ``"1,2,5-7"``, ``"1-30/5"``, an int, or
    an iterable of ints; ``day_of_week`` also takes names (``"mon-fri"``, 0 and 7 = Sunday).
    Unlike classic cron, ``day_of_week`` and ``day_of_month`` must both match (Celery's rule).
    """

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*") -> None:
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = _parse(minute, 0, 59, "minute")
        self.hour = _parse(hour, 0, 23, "hour")
        self.day_of_week = {d % 7 for d in _parse(day_of_week, 0, 7, "day_of_week", _DAY_NAMES)}
        self.day_of_month = _parse(day_of_month, 1, 31, "day_of_month")
        self.month_of_year = _parse(month_of_year, 1, 12, "month_of_year", _MONTH_NAMES)
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)

    def matches(self, moment: _dt.datetime) -> bool:
        return (moment.minute in self.minute and moment.hour in self.hour
                and self._day_matches(moment.date()))

    def _day_matches(self, day: _dt.date) -> bool:
        return (day.month in self.month_of_year and day.day in self.day_of_month
                and (day.weekday() + 1) % 7 in self.day_of_week)

    def next_after(self, moment: _dt.datetime) -> _dt.datetime:
        """The first matching minute strictly after ``moment``, in ``moment``'s zone.

        Wall-clock times skipped by a DST change are skipped; a repeated hour fires once
        (its first occurrence)."""
        tz = moment.tzinfo
        start = moment.replace(second=0, microsecond=0, tzinfo=None) + _dt.timedelta(minutes=1)
        day = start.date()
        last_day = day + _dt.timedelta(days=366 * SEARCH_YEARS)
        while day <= last_day:
            if self._day_matches(day):
                first_day = day == start.date()
                for hour in self._hours:
                    if first_day and hour < start.hour:
                        continue
                    for minute in self._minutes:
                        if first_day and hour == start.hour and minute < start.minute:
                            continue
                        candidate = _existing(_dt.datetime(day.year, day.month, day.day,
                                                           hour, minute), tz)
                        if candidate is not None and candidate > moment:
                            return candidate
            day += _dt.timedelta(days=1)
        raise ValueError(f"{self!r} never matches")

    def last_slot(self, due: _dt.datetime, now: _dt.datetime) -> _dt.datetime:
        # every slot up to now counts as done: next_after(now) is the next one in the future
        return max(due, now)

    def __repr__(self) -> str:
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        return "<crontab: " + " ".join(
            f"{name}={_text(value)}" for name, value in zip(fields, self._orig)) + ">"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and (
            (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year)
            == (other.minute, other.hour, other.day_of_week, other.day_of_month,
                other.month_of_year))

    def __hash__(self) -> int:
        return hash(repr(self))


def to_schedule(value: Any) -> Any:
    """What a ``beat_schedule`` entry's ``schedule`` may be -> an object with ``next_after``."""
    if isinstance(value, (int, float, _dt.timedelta)) and not isinstance(value, bool):
        return schedule(value)
    if hasattr(value, "next_after"):
        return value
    raise TypeError(f"a schedule is seconds, a timedelta or crontab(...), got {value!r}")


def zone(name: str | _dt.tzinfo | None) -> _dt.tzinfo:
    if isinstance(name, _dt.tzinfo):
        return name
    return ZoneInfo(name or "UTC")


# -- parsing ---------------------------------------------------------------------------
def _parse(spec: Any, low: int, high: int, field: str,
           names: dict[str, int] | None = None) -> set[int]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.replace(" ", "").lower().split(","):
            values |= _parse_part(part, low, high, field, names or {})
    elif isinstance(spec, Iterable):
        values = set()
        for item in spec:
            values |= _parse(item, low, high, field, names)
    else:
        raise ValueError(f"crontab {field}: cannot read {spec!r}")
    bad = [v for v in values if not low <= v <= high]
    if bad or not values:
        raise ValueError(f"crontab {field}: {spec!r} is outside {low}-{high}")
    return values


def _parse_part(part: str, low: int, high: int, field: str, names: dict[str, int]) -> set[int]:
    if not part:
        raise ValueError(f"crontab {field}: empty item")
    body, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ValueError(f"crontab {field}: bad step in {part!r}")
        step = int(step_text)
    if body == "*":
        first, last = low, high if field != "day_of_week" else 6
    elif "-" in body:
        a, _, b = body.partition("-")
        first, last = _number(a, field, names), _number(b, field, names)
        if last < first:
            if field == "day_of_week":   # "fri-mon" wraps around the week
                return {d % 7 for d in range(first, last + 8, step)}
            raise ValueError(f"crontab {field}: range {part!r} runs backwards")
    else:
        first = _number(body, field, names)
        last = first if not step_text else high
    return set(range(first, last + 1, step))


def _number(text: str, field: str, names: dict[str, int]) -> int:
    if text.isdigit():
        return int(text)
    key = text[:3]
    if key in names and names is not None and len(text) >= 3:
        return names[key]
    raise ValueError(f"crontab {field}: cannot read {text!r}")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return ",".join(str(v) for v in value)
    return str(value)


def _existing(naive: _dt.datetime, tz: _dt.tzinfo | None) -> _dt.datetime | None:
    """``naive`` in ``tz``, or None when that wall-clock time doesn't exist there (DST gap)."""
    if tz is None:
        return naive
    aware = naive.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(_dt.timezone.utc).astimezone(tz)
    if back.replace(tzinfo=None) != naive:
        return None
    return aware
