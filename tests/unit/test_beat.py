"""Beat driven by a ManualClock against the session's real Redis (no worker processes)."""

from datetime import datetime, timezone

import pytest

from engine import crontab, message
from engine.beat import Beat, ManualClock

ADD = "tests.apps.basic.add"
T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc).timestamp()


def sent(app, queue="default"):
    """Bodies beat put on ``queue`` so far, oldest first."""
    entries = app.client.xrange(app.broker.keys.queue(queue))
    return [message.decode_message(fields[b"m"]) for _, fields in entries]


def every(seconds, **extra):
    return {"tick": {"task": ADD, "schedule": seconds, "args": (1, 2), **extra}}


@pytest.fixture
def clock():
    return ManualClock(T0)


def make(app, clock, schedule, **kwargs):
    beat = Beat(app, clock=clock, schedule=schedule, lease=30, **kwargs)
    return beat


def test_an_interval_entry_fires_once_per_period(app, clock):
    # Given a beat with a 10 s entry, started at T0
    beat = make(app, clock, every(10))
    beat.tick()
    assert sent(app) == []
    # When the clock reaches T0 + 10 (and not before)
    clock.advance(9.9)
    beat.tick()
    assert sent(app) == []
    clock.advance(0.1)
    beat.tick()
    beat.tick()
    # Then exactly one message, with the entry's task and arguments
    bodies = sent(app)
    assert [(b["task"], b["args"]) for b in bodies] == [(ADD, [1, 2])]
    clock.advance(10)
    beat.tick()
    assert len(sent(app)) == 2


def test_tick_says_when_the_next_round_is_needed(app, clock):
    beat = make(app, clock, every(2))
    assert 0 < beat.tick() <= 2


def test_a_crontab_entry_fires_on_its_minutes(app, clock):
    # Given */5 minutes, starting at 10:03:30 UTC
    clock.set(datetime(2024, 5, 1, 10, 3, 30, tzinfo=timezone.utc))
    beat = make(app, clock, {"cron": {"task": ADD, "schedule": crontab(minute="*/5"),
                                      "args": (0, 0)}})
    beat.tick()
    # When the clock passes 10:04:59, 10:05:00, 10:05:30 and 10:10:00
    fired = []
    for moment in [(10, 4, 59), (10, 5, 0), (10, 5, 30), (10, 9, 59), (10, 10, 0)]:
        clock.set(datetime(2024, 5, 1, *moment, tzinfo=timezone.utc))
        before = len(sent(app))
        beat.tick()
        fired.append(len(sent(app)) - before)
    # Then it fired at 10:05:00 and 10:10:00 only
    assert fired == [0, 1, 0, 0, 1]


def test_a_crontab_entry_uses_the_app_timezone(app, clock):
    # 9:00 in Paris is 7:00 UTC in May
    clock.set(datetime(2024, 5, 1, 6, 59, tzinfo=timezone.utc))
    beat = make(app, clock, {"nine": {"task": ADD, "schedule": crontab(minute=0, hour=9)}},
                timezone="Europe/Paris")
    beat.tick()
    clock.set(datetime(2024, 5, 1, 7, 0, tzinfo=timezone.utc))
    beat.tick()
    assert len(sent(app)) == 1


def test_missed_slots_fire_once_and_keep_the_grid(app, clock):
    beat = make(app, clock, every(10))
    beat.tick()
    # When the beat was away for 95 s
    clock.advance(95)
    beat.tick()
    beat.tick()
    # Then one run for the whole stretch, and the next one on the original grid (T0 + 100)
    assert len(sent(app)) == 1
    clock.advance(4.9)
    beat.tick()
    assert len(sent(app)) == 1
    clock.advance(0.1)
    beat.tick()
    assert len(sent(app)) == 2


def test_a_restart_neither_skips_nor_repeats(app, clock):
    # Given a beat that fired at T0 + 10 and then stopped
    first = make(app, clock, every(10))
    first.tick()
    clock.advance(10)
    first.tick()
    first.release()
    assert len(sent(app)) == 1
    # When a new beat starts at the same moment
    second = make(app, clock, every(10))
    second.tick()
    # Then it does not repeat the run, and fires the next slot on time
    assert len(sent(app)) == 1
    clock.advance(9.9)
    second.tick()
    assert len(sent(app)) == 1
    clock.advance(0.1)
    second.tick()
    assert len(sent(app)) == 2
    # And a slot that passed while no beat ran is made up once on restart
    second.release()
    clock.advance(25)
    third = make(app, clock, every(10))
    third.tick()
    third.tick()
    assert len(sent(app)) == 3


def test_two_beats_never_both_fire_and_the_standby_takes_over(app, clock):
    # Given two beats on the same schedule
    a, b = make(app, clock, every(1)), make(app, clock, every(1))
    a.tick()
    b.tick()
    assert a.is_leader and not b.is_leader
    # When both tick through 20 due slots
    for _ in range(20):
        clock.advance(1)
        a.tick()
        b.tick()
    # Then every slot was sent once
    assert len(sent(app)) == 20
    # When the leader goes away, the standby takes over and continues the grid
    a.release()
    b.tick()
    assert b.is_leader
    assert len(sent(app)) == 20
    clock.advance(1)
    b.tick()
    a.tick()
    assert len(sent(app)) == 21 and not a.is_leader


def test_a_lock_lost_to_expiry_stops_firing(app, clock):
    beat = make(app, clock, every(1))
    beat.tick()
    # When another process holds the lock (ours expired)
    app.client.set(beat.lock_key, "someone-else")
    clock.advance(5)
    beat.tick()
    assert not beat.is_leader
    assert sent(app) == []


def test_removed_entries_are_forgotten_and_changed_ones_restart(app, clock):
    beat = make(app, clock, {**every(10), "old": {"task": ADD, "schedule": 5}})
    beat.tick()
    beat.release()
    assert set(app.client.hkeys(beat.state_key)) == {b"tick", b"old"}
    # When the code drops "old" and changes "tick" to 3 s
    clock.advance(4)
    beat = make(app, clock, every(3))
    beat.tick()
    # Then "old" is gone, and "tick" runs 3 s after the change, not at once
    assert set(app.client.hkeys(beat.state_key)) == {b"tick"}
    assert sent(app) == []
    clock.advance(3)
    beat.tick()
    assert len(sent(app)) == 1


def test_options_are_passed_to_send_task(app, clock):
    beat = make(app, clock, every(1, options={"queue": "beatq", "priority": 3}))
    beat.tick()
    clock.advance(1)
    beat.tick()
    assert len(sent(app, "beatq")) == 1


def test_bad_entries_are_refused_with_their_name(app, clock):
    from engine.exceptions import ConfigurationError
    with pytest.raises(ConfigurationError, match="broken"):
        make(app, clock, {"broken": {"task": ADD, "schedule": "often"}})
    with pytest.raises(ConfigurationError, match="needs 'task'"):
        make(app, clock, {"broken": {"schedule": 1}})
