"""`engine inspect` and `engine control` against real workers (threads pool)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_for

APP = "tests.apps.basic"


@pytest.fixture
def inspect(engine):
    """``inspect VERB --json`` -> {worker: reply}."""
    def ask(verb: str, *extra: str) -> dict:
        out = engine("inspect", "-A", APP, verb, "--json", "-t", "5", *extra)
        return json.loads(out.stdout) if out.stdout.strip() else {}
    return ask


@pytest.fixture
def two_workers(run_worker, inspect):
    workers = {name: run_worker("--pool", "threads", "-c", "2", "-n", name)
               for name in ("alpha", "beta")}
    # ready is logged before the control subscription is surely active: wait for both
    wait_for(lambda: set(inspect("ping")) == {"alpha", "beta"}, message="both to answer")
    return workers


def test_ping_reaches_all_workers_or_those_named(two_workers, inspect, engine):
    assert inspect("ping") == {"alpha": {"ok": "pong"}, "beta": {"ok": "pong"}}
    assert inspect("ping", "-d", "beta") == {"beta": {"ok": "pong"}}
    human = engine("inspect", "-A", APP, "ping", "-t", "5")
    assert human.returncode == 0
    assert "-> alpha: OK pong" in human.stdout and "-> beta: OK pong" in human.stdout


def test_inspect_with_no_worker_says_so(engine, env):
    out = engine("inspect", "-A", APP, "ping", "-t", "0.2")
    assert out.returncode == 1
    assert "no reply" in out.stderr


def test_stats_describes_the_worker_from_inside(two_workers, inspect, engine):
    stats = inspect("stats", "-d", "alpha")["alpha"]
    assert stats["pid"] == two_workers["alpha"].pid
    assert stats["rss"] > 0
    (lane,) = stats["lanes"]
    assert lane["pool"] == "threads" and lane["concurrency"] == 2 and lane["queues"] == ["default"]
    human = engine("inspect", "-A", APP, "stats", "-d", "alpha", "-t", "5").stdout
    assert "lane default: threads:2" in human


def test_registered_lists_the_app_tasks(two_workers, inspect, engine):
    registered = inspect("registered")
    assert "tests.apps.basic.add" in registered["alpha"]
    assert registered["alpha"] == registered["beta"]
    assert "* tests.apps.basic.fail" in engine("inspect", "-A", APP, "registered", "-t", "5").stdout


def test_active_shows_a_running_task_and_revoke_terminates_it(app, two_workers, inspect, engine):
    # Given a long task running on some worker
    result = app.tasks["tests.apps.basic.spin"].delay(120)

    def running():
        return [(worker, job) for worker, jobs in inspect("active").items()
                for job in jobs if job["id"] == result.id and job["started"]]
    ((worker, job),) = wait_for(running, message="the task to run")
    assert job["task"] == "tests.apps.basic.spin" and job["args"] == [120]
    assert result.id in engine("inspect", "-A", APP, "active", "-t", "5").stdout
    # When it is revoked with --terminate
    out = engine("control", "-A", APP, "revoke", result.id, "--terminate", "-t", "5")
    # Then every worker acknowledges, and the task ends REVOKED
    assert out.returncode == 0
    assert f"-> {worker}: OK revoked {result.id}" in out.stdout
    wait_for(lambda: result.state == "REVOKED", message="REVOKED")
    wait_for(lambda: not any(inspect("active", "-d", worker).values()), message="slot freed")


def test_revoke_without_workers_is_kept_for_later(app, engine):
    out = engine("control", "-A", APP, "revoke", "some-id", "-t", "0.2")
    assert out.returncode == 0 and "no live worker answered" in out.stdout
    assert app.client.zscore(app.broker.keys.revoked, "some-id") is not None


def test_queues_shows_depths_and_consumers(app, two_workers, inspect, engine):
    # Given three messages on a queue nobody consumes
    for i in range(3):
        app.send_task("tests.apps.basic.add", (i, i), queue="idle")
    data = inspect("queues")
    assert data["queues"]["idle"]["waiting"] == 3
    assert data["queues"]["default"]["waiting"] == 0
    assert data["workers"]["alpha"] == [{"lane": "default", "queues": ["default"],
                                         "pool": "threads"}]
    lines = engine("inspect", "-A", APP, "queues", "-t", "5").stdout.splitlines()
    assert lines[0].split() == ["queue", "waiting", "unacked", "delayed", "dead", "workers"]
    assert ["idle", "3", "0", "0", "0", "-"] in [line.split() for line in lines]
    assert ["default", "0", "0", "0", "0", "alpha,beta"] in [line.split() for line in lines]


def test_pool_grow_and_shrink(two_workers, inspect, engine):
    # When alpha's pool grows by 3
    out = engine("control", "-A", APP, "pool-grow", "3", "-d", "alpha", "-t", "5")
    assert out.returncode == 0 and "-> alpha: OK grew by 3" in out.stdout
    # Then its stats say 5 and beta is untouched
    stats = inspect("stats")
    assert stats["alpha"]["lanes"][0]["pool_info"]["concurrency"] == 5
    assert stats["alpha"]["lanes"][0]["concurrency"] == 5
    assert stats["beta"]["lanes"][0]["concurrency"] == 2
    # When it shrinks by 2, naming the lane (Celery's spelling, pool_shrink, works too)
    out = engine("control", "-A", APP, "pool_shrink", "2", "--lane", "default", "-d", "alpha",
                 "--json", "-t", "5")
    assert json.loads(out.stdout)["alpha"]["concurrency"] == 3
    # And a lane that does not exist is an error reply, not a crash
    out = engine("control", "-A", APP, "pool_grow", "1", "--lane", "nope", "-d", "alpha", "-t", "5")
    assert out.returncode == 1 and "ERROR no lane named 'nope'" in out.stdout
    # And a grow past the cap is refused (a typo must not fork thousands of children)
    out = engine("control", "-A", APP, "pool-grow", "100000", "-d", "alpha", "-t", "5")
    assert out.returncode == 1 and "ERROR pool-grow adds at most 1000" in out.stdout
    assert inspect("stats")["alpha"]["lanes"][0]["concurrency"] == 3
    assert set(inspect("ping")) == {"alpha", "beta"}


def test_pool_resize_on_a_pool_that_cannot_is_an_error_reply(run_worker, inspect, engine):
    run_worker("--pool", "solo", "-n", "solo1")
    wait_for(lambda: inspect("ping"), message="solo worker to answer")
    out = engine("control", "-A", APP, "pool-grow", "1", "-t", "5")
    assert out.returncode == 1 and "-> solo1: ERROR" in out.stdout


def test_bad_control_arguments_exit_2(engine, env):
    assert engine("control", "-A", APP, "pool-grow", "many").returncode == 2
    assert engine("control", "-A", APP, "revoke").returncode == 2


def test_shutdown_stops_only_the_named_worker(two_workers, inspect, engine):
    out = engine("control", "-A", APP, "shutdown", "-d", "alpha", "-t", "5")
    assert out.returncode == 0 and "-> alpha: OK shutting down" in out.stdout
    assert two_workers["alpha"].wait() == 0
    assert inspect("ping") == {"beta": {"ok": "pong"}}
