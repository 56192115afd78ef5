"""crontab and schedule: parsing and next_after, in a timezone."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine import crontab
from engine.schedules import schedule, to_schedule

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def at(*fields, tz=UTC):
    return datetime(*fields, tzinfo=tz)


def test_every_minute_is_the_next_whole_minute():
    assert crontab().next_after(at(2024, 5, 1, 10, 0, 30)) == at(2024, 5, 1, 10, 1)
    assert crontab().next_after(at(2024, 5, 1, 10, 1)) == at(2024, 5, 1, 10, 2)


def test_step_and_list_and_range():
    cron = crontab(minute="*/15")
    assert cron.minute == {0, 15, 30, 45}
    assert cron.next_after(at(2024, 5, 1, 10, 15)) == at(2024, 5, 1, 10, 30)
    assert cron.next_after(at(2024, 5, 1, 10, 50)) == at(2024, 5, 1, 11, 0)
    assert crontab(minute="1,2,5-7").minute == {1, 2, 5, 6, 7}
    assert crontab(minute="10-30/10").minute == {10, 20, 30}
    assert crontab(hour=[1, 3]).hour == {1, 3}


def test_daily_at_a_fixed_time_rolls_to_the_next_day():
    cron = crontab(minute=30, hour=7)
    assert cron.next_after(at(2024, 5, 1, 7, 29)) == at(2024, 5, 1, 7, 30)
    assert cron.next_after(at(2024, 5, 1, 7, 30)) == at(2024, 5, 2, 7, 30)


def test_day_names_and_sunday_as_zero_or_seven():
    weekdays = crontab(minute=0, hour=9, day_of_week="mon-fri")
    assert weekdays.day_of_week == {1, 2, 3, 4, 5}
    # Friday 2024-05-03 after 9:00 -> Monday 2024-05-06
    assert weekdays.next_after(at(2024, 5, 3, 9, 0)) == at(2024, 5, 6, 9, 0)
    assert crontab(day_of_week="sun").day_of_week == crontab(day_of_week=7).day_of_week == {0}
    assert crontab(day_of_week="fri-mon").day_of_week == {5, 6, 0, 1}
    assert crontab(day_of_week="sunday,wednesday").day_of_week == {0, 3}


def test_day_of_month_and_month_both_apply():
    cron = crontab(minute=0, hour=0, day_of_month=31, month_of_year="*")
    assert cron.next_after(at(2024, 4, 1)) == at(2024, 5, 31)
    leap = crontab(minute=0, hour=12, day_of_month=29, month_of_year="feb")
    assert leap.next_after(at(2024, 3, 1)) == at(2028, 2, 29, 12)


def test_the_result_is_in_the_timezone_asked():
    cron = crontab(minute=0, hour=9)
    moment = at(2024, 5, 1, 8, 0, tz=PARIS)
    nxt = cron.next_after(moment)
    assert nxt == at(2024, 5, 1, 9, 0, tz=PARIS)
    assert nxt.utcoffset() == timedelta(hours=2)


def test_a_wall_time_skipped_by_dst_is_skipped():
    # 2024-03-31 02:30 does not exist in Paris (02:00 -> 03:00)
    cron = crontab(minute=30, hour=2)
    assert cron.next_after(at(2024, 3, 31, 1, 0, tz=PARIS)) == at(2024, 4, 1, 2, 30, tz=PARIS)


@pytest.mark.parametrize("bad", [dict(minute=60), dict(hour="25"), dict(minute="*/0"),
                                 dict(day_of_week="xyz"), dict(minute="5-1"),
                                 dict(day_of_month=0), dict(minute="")])
def test_bad_fields_are_refused_clearly(bad):
    with pytest.raises(ValueError, match="crontab"):
        crontab(**bad)


def test_interval_schedule_from_seconds_or_timedelta():
    start = at(2024, 5, 1, 10, 0)
    assert schedule(30).next_after(start) == at(2024, 5, 1, 10, 0, 30)
    assert schedule(timedelta(minutes=2)).next_after(start) == at(2024, 5, 1, 10, 2)
    assert to_schedule(1.5) == schedule(1.5)
    assert isinstance(to_schedule(crontab()), crontab)
    with pytest.raises(ValueError):
        schedule(0)
    with pytest.raises(TypeError):
        to_schedule("every minute")


def test_a_missed_stretch_counts_as_one_slot_on_the_grid():
    every = schedule(10)
    due = at(2024, 5, 1, 10, 0, 0)
    assert every.last_slot(due, at(2024, 5, 1, 10, 0, 35)) == at(2024, 5, 1, 10, 0, 30)
    cron = crontab(minute="*/5")
    now = at(2024, 5, 1, 10, 17)
    assert cron.next_after(cron.last_slot(at(2024, 5, 1, 10, 5), now)) == at(2024, 5, 1, 10, 20)
