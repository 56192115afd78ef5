"""Flow control for the whole fleet (engine.flow): rate limits, concurrency limits, unique
tasks and paused queues, with real workers sharing one Redis."""

from __future__ import annotations

import json
import re

from tests.conftest import app_fixture, wait_for

APP = "tests.apps.flow"


fapp = app_fixture("tests.apps.flow")


def starts(app) -> list[float]:
    from tests.apps.flow import key
    return sorted(float(t) for t in app.client.lrange(key("starts"), 0, -1))


def most_in_a_second(times: list[float]) -> int:
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_a_rate_limit_holds_across_two_workers_and_never_poisons(fapp, run_worker):
    from tests.apps.flow import limited
    # Given two workers and 30 tasks limited to 5/s for the fleet (task_max_deliveries=2)
    run_worker("--pool", "threads", "-c", "4", "-n", "w1", app=APP)
    run_worker("--pool", "threads", "-c", "4", "-n", "w2", app=APP)
    results = [limited.delay(i) for i in range(30)]
    # Then all run, none is dead-lettered though most were held back more than twice
    assert [r.get(timeout=60) for r in results] == list(range(30))
    assert fapp.client.xlen(fapp.broker.keys.dlq("default")) == 0
    # And in no second did more start than the rate plus its one burst (5 + 5)
    assert most_in_a_second(starts(fapp)) <= 10


def test_an_unlimited_task_behind_a_flood_of_limited_ones_runs_at_once(fapp, run_worker,
                                                                        engine):
    from tests.apps.flow import free, limited
    # Given 100 tasks at 5/s (20 s of work) queued before one unlimited task
    run_worker("--pool", "threads", "-c", "4", app=APP)
    flood = limited.delay_many([(i,) for i in range(100)])
    # Then the unlimited one finishes while the flood is still mostly waiting
    assert free.delay("me").get(timeout=60) == "me"
    assert len(starts(fapp)) < 100
    # When the fleet's rate is raised at run time
    out = engine("control", "-A", APP, "rate-limit", "tests.apps.flow.limited", "10000/s",
                 "-t", "5")
    assert out.returncode == 0, out.stderr
    # Then the rest runs, and the new rate is kept in Redis for workers started later
    assert [r.get(timeout=120) for r in flood] == list(range(100))
    assert fapp.client.hget(f"{fapp.conf.key_prefix}:rate_limits",
                            "tests.apps.flow.limited") == b"10000/s"


def test_max_concurrency_holds_across_workers_and_survives_a_killed_holder(fapp, run_worker):
    from tests.apps.flow import exclusive, key
    # Given two workers with 4 slots each and a task allowed 2 at once fleet-wide
    w1 = run_worker("--pool", "threads", "-c", "4", "-n", "c1", app=APP)
    run_worker("--pool", "threads", "-c", "4", "-n", "c2", app=APP)
    results = [exclusive.delay(0.2) for _ in range(12)]
    assert [r.get(timeout=90) for r in results] == [0.2] * 12
    # Then never more than 2 ran at once
    assert int(fapp.client.get(key("peak"))) == 2
    # When a worker holding slots is killed (the held tasks run for 8 s: long past the kill;
    # redelivered to the other worker, they take the slots again for that long)
    held = [exclusive.delay(8) for _ in range(2)]
    wait_for(lambda: int(fapp.client.get(key("running")) or 0) == 2, message="2 running")
    w1.kill_all()
    fapp.client.set(key("running"), 0)   # the killed ones never decrement
    # Then its slots come back once it is declared lost: new tasks run on the other worker
    after = [exclusive.delay(0.1) for _ in range(2)]
    assert [r.get(timeout=90) for r in after] == [0.1, 0.1]
    assert all(not r.ready() or r.get() == 8 for r in held)


def test_unique_tasks_run_once_while_pending_and_again_after(fapp, run_worker):
    from tests.apps.flow import key, once
    # Given ten identical sends of a unique task
    results = [once.delay("a", 0.5) for _ in range(10)]
    # Then they share one id, and one run
    assert len({r.id for r in results}) == 1
    run_worker("--pool", "threads", "-c", "4", app=APP)
    assert results[0].get(timeout=60) == "a"
    assert int(fapp.client.get(key("runs:a"))) == 1
    # And a send after it finished runs again; other arguments are another task
    again = once.delay("a")
    assert again.id != results[0].id and again.get(timeout=60) == "a"
    assert once.delay("b").get(timeout=60) == "b"
    wait_for(lambda: int(fapp.client.get(key("runs:a"))) == 2, message="the second run")


def test_pause_and_resume_a_queue_for_the_fleet(fapp, run_worker, engine):
    from tests.apps.flow import free
    # Given a paused queue, before any worker started
    assert engine("control", "-A", APP, "pause", "slow", "-t", "1").returncode == 0
    run_worker("--pool", "threads", "-c", "2", "-Q", "default,slow", app=APP)
    waiting = free.apply_async(("paused",), queue="slow")
    # Then the worker serves the other queue, and the paused one keeps its message
    assert free.delay("running").get(timeout=60) == "running"
    assert free.delay("still").get(timeout=60) == "still"
    assert waiting.state == "PENDING"
    assert fapp.broker.depth("slow")["waiting"] == 1
    stats = json.loads(engine("inspect", "-A", APP, "stats", "--json", "-t", "5").stdout)
    assert all(reply["paused"] == ["slow"] for reply in stats.values())
    # When it is resumed
    assert engine("control", "-A", APP, "resume", "slow", "-t", "5").returncode == 0
    # Then its message runs
    assert waiting.get(timeout=60) == "paused"


def test_inspect_stats_shows_rates_waiting_slots_in_use_and_paused(fapp, run_worker, engine):
    from tests.apps.flow import exclusive, key, limited
    # Given a paused queue, a flood of a task limited to 5/s and two runs of a task
    # allowed 2 at once, both running
    assert engine("control", "-A", APP, "pause", "slow", "-t", "1").returncode == 0
    run_worker("--pool", "threads", "-c", "4", "-Q", "default,slow", app=APP)
    limited.delay_many([(i,) for i in range(200)])
    [exclusive.delay(60) for _ in range(2)]
    wait_for(lambda: int(fapp.client.get(key("running")) or 0) == 2, message="2 running")

    # Then stats has each limit, what waits on it, the fleet's slots in use and the pause
    def limits():
        before = len(starts(fapp))   # started before the reply: never counted as waiting
        out = engine("inspect", "-A", APP, "stats", "--json", "-t", "5")
        (reply,) = json.loads(out.stdout).values()
        found = reply["limits"]
        return (reply, before) if found["tests.apps.flow.limited"]["waiting"] > 0 else None
    reply, started = wait_for(limits, message="held-back messages in stats")
    rate = reply["limits"]["tests.apps.flow.limited"]
    assert (rate["rate_limit"], rate["rate_per_s"], rate["max_concurrency"]) == ("5/s", 5.0, None)
    assert rate["held_back"] >= rate["waiting"] > 0
    assert rate["waiting"] + started <= 200
    slots = reply["limits"]["tests.apps.flow.exclusive"]
    assert (slots["max_concurrency"], slots["in_use"], slots["rate_limit"]) == (2, 2, None)
    assert reply["paused"] == ["slow"]
    # And the text form says the same for a person
    text = engine("inspect", "-A", APP, "stats", "-t", "5").stdout
    assert "limit tests.apps.flow.limited: rate 5/s, " in text
    assert re.search(r"limit tests\.apps\.flow\.limited: .*, (\d+) waiting on it", text)
    assert ("limit tests.apps.flow.exclusive: max_concurrency 2 (2 in use in the fleet)"
            in text)
    assert "paused queues: slow" in text
    # When the rate changes at run time, stats shows the new one
    assert engine("control", "-A", APP, "rate-limit", "tests.apps.flow.limited", "7/m",
                  "-t", "5").returncode == 0
    out = json.loads(engine("inspect", "-A", APP, "stats", "--json", "-t", "5").stdout)
    (reply,) = out.values()
    assert reply["limits"]["tests.apps.flow.limited"]["rate_limit"] == "7/m"
