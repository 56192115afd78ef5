"""``engine run --processes N``: N supervisors under one parent, with real signals."""

import json
import signal

import psutil
import pytest

from tests.apps.basic import mark_and_sleep, sleep
from tests.conftest import wait_for, wait_started


def start_fleet(run_worker, prefix, *args, n=2):
    """A fleet of ``n`` supervisors named ``<prefix>@fleet-1..n``, once all are ready."""
    fleet = run_worker("--processes", str(n), "-n", f"{prefix}@fleet", *args, ready=False)
    wait_for(lambda: fleet.log.count(" ready: ") >= n or not fleet.alive(),
             message=f"{n} supervisors to be ready")
    assert fleet.alive(), fleet.log
    return fleet


def supervisors(fleet):
    """The parent's direct children: its supervisors, by pid."""
    return {p.pid: p for p in psutil.Process(fleet.pid).children()}


def gone(process):
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_tasks_run_on_every_supervisor_and_each_answers(app, run_worker, prefix, engine):
    # Given a fleet of two one-slot supervisors holding one message each at most
    fleet = start_fleet(run_worker, prefix, "--pool", "threads", "-c", "1", "--prefetch", "1")
    # When ten slow tasks are sent
    results = [sleep.delay(0.3) for _ in range(10)]
    # Then they all finish, and both supervisors ran some
    assert app.gather(results, timeout=60) == [0.3] * 10
    workers = {app.backend.peek(r.id)["worker"] for r in results}
    assert workers == {f"{prefix}@fleet-1", f"{prefix}@fleet-2"}
    # And `engine inspect ping` with the prefix pattern reaches both
    ping = engine("-A", "tests.apps.basic", "inspect", "ping", "-d", f"{prefix}@fleet-*",
                  "--json")
    assert ping.returncode == 0, ping.stderr
    assert sorted(json.loads(ping.stdout)) == sorted(workers)
    # And a name without a pattern still reaches one only
    one = engine("-A", "tests.apps.basic", "inspect", "ping", "-d", f"{prefix}@fleet-2",
                 "--json")
    assert list(json.loads(one.stdout)) == [f"{prefix}@fleet-2"]
    # And SIGUSR1 to the parent reaches both (each logs its stats)
    fleet.signal(signal.SIGUSR1)
    wait_for(lambda: fleet.log.count("stats: ") >= 2, message="both supervisors' stats")
    # And one told to shut down by control stays down while the other runs on
    down = engine("-A", "tests.apps.basic", "control", "shutdown", "-d", f"{prefix}@fleet-2")
    assert down.returncode == 0, down.stderr
    wait_for(lambda: f"{prefix}@fleet-2 stopped by itself; not restarted" in fleet.log,
             message="the supervisor to stop by itself")
    assert fleet.alive() and len(supervisors(fleet)) == 1
    assert fleet.stop() == 0


def test_sigterm_is_a_warm_shutdown_of_all(app, run_worker, prefix):
    # Given a fleet with a task running on one of its supervisors
    fleet = start_fleet(run_worker, prefix, "--pool", "threads", "-c", "1")
    members = supervisors(fleet)
    assert len(members) == 2
    running = mark_and_sleep.delay(f"{prefix}:started", 1.5)
    wait_started(app, running.id)
    # When the parent gets SIGTERM
    fleet.signal(signal.SIGTERM)
    # Then every supervisor stops warm: the running task finishes, and the parent exits 0
    assert fleet.wait() == 0
    assert running.get(timeout=5) == 1.5
    assert all(gone(p) for p in members.values())
    assert fleet.log.count("stopped (warm)") == 2


def test_second_signal_is_cold_for_all(app, run_worker, prefix):
    # Given a fleet in a warm shutdown, waiting on a long task
    fleet = start_fleet(run_worker, prefix, "--pool", "threads", "-c", "1")
    long = sleep.delay(60)
    wait_started(app, long.id)
    fleet.signal(signal.SIGINT)
    wait_for(lambda: fleet.log.count("warm shutdown: finishing") == 2,
             message="both supervisors in a warm shutdown")
    # When a second signal comes
    fleet.signal(signal.SIGINT)
    # Then all stop at once (cold), the task unfinished and still unacked
    assert fleet.wait(30) == 0
    assert fleet.log.count("stopped (cold)") >= 1
    assert long.state == "PENDING"
    assert app.broker.depth("default")["unacked"] == 1


def test_a_killed_supervisor_is_restarted_and_takes_its_task_back(app, run_worker, prefix):
    # Given a fleet with a task running on one supervisor (threads: the task's pid is its)
    fleet = start_fleet(run_worker, prefix, "--pool", "threads", "-c", "1")
    key = f"{prefix}:started"
    task = mark_and_sleep.delay(key, 1.0)
    victim = int(wait_for(lambda: app.client.get(key), message="the task to start"))
    assert victim in supervisors(fleet)
    app.client.delete(key)
    # When that supervisor is killed
    psutil.Process(victim).kill()
    # Then the parent starts it again under its name, and the task runs again there
    wait_for(lambda: "starting it again" in fleet.log, message="the restart")
    assert task.get(timeout=60) == 1.0
    again = int(app.client.get(key))
    assert again != victim and again in supervisors(fleet)
    assert "starting it again in 1 s" in fleet.log
    # And when the new one dies young too, the wait before the next start doubles
    psutil.Process(again).kill()
    wait_for(lambda: "starting it again in 2 s" in fleet.log, message="the second restart")
    wait_for(lambda: fleet.log.count(" ready: ") >= 4, message="the third start to be ready")
    assert fleet.alive()
    assert fleet.stop() == 0


def test_parent_killed_takes_every_supervisor_and_pool_child_with_it(run_worker, prefix):
    # Given a fleet of two prefork supervisors with two children each
    fleet = start_fleet(run_worker, prefix, "--pool", "prefork", "-c", "2")
    tree = wait_for(lambda: (lambda t: t if len(t) >= 6 else None)(fleet.children()),
                    message="two supervisors and four pool children")
    # When the parent is SIGKILLed
    fleet.proc.kill()
    fleet.wait()
    # Then every process under it ends
    wait_for(lambda: all(gone(p) for p in tree), message="every descendant to end")


def test_a_supervisor_that_cannot_start_stops_the_fleet_with_exit_2(app, run_worker, prefix):
    # Given a worker already running under the name the first supervisor would take
    run_worker("--pool", "threads", "-c", "1", "-n", f"{prefix}@fleet-1")
    # When a fleet starts
    fleet = run_worker("--processes", "2", "--pool", "threads", "-c", "1",
                       "-n", f"{prefix}@fleet", ready=False)
    # Then it stops the other supervisor and exits 2, saying which could not start
    assert fleet.wait() == 2
    assert f"supervisor {prefix}@fleet-1 could not start" in fleet.log


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_bad_process_count_is_one_line_and_exit_2(engine, value):
    done = engine("-A", "tests.apps.basic", "run", "--processes", value)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--processes" in lines[0], done.stderr


def test_worker_processes_setting_starts_a_fleet(run_worker, prefix, engine):
    # Given an app whose settings ask for two supervisors
    fleet = run_worker("-n", f"{prefix}@set", "--pool", "threads", "-c", "1",
                       app="tests.apps.fleet:app", ready=False)
    # Then `engine run` without --processes starts two, each answering ping
    wait_for(lambda: fleet.log.count(" ready: ") >= 2 or not fleet.alive(),
             message="two supervisors to be ready")
    assert fleet.alive(), fleet.log
    ping = engine("-A", "tests.apps.fleet:app", "inspect", "ping", "-d", f"{prefix}@set-*",
                  "--json")
    assert sorted(json.loads(ping.stdout)) == [f"{prefix}@set-1", f"{prefix}@set-2"]
    assert fleet.stop() == 0


def test_bad_worker_processes_setting_is_one_line_and_exit_2(engine):
    done = engine("-A", "tests.apps.fleet:bad", "run")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("engine run: error: worker_processes must be"), done.stderr
    assert "Traceback" not in done.stderr


def test_sigquit_is_cold_for_all_at_once(app, run_worker, prefix):
    # Given a fleet running a long task
    fleet = start_fleet(run_worker, prefix, "--pool", "threads", "-c", "1")
    members = supervisors(fleet)
    long = sleep.delay(60)
    wait_started(app, long.id)
    # When the parent gets SIGQUIT (Celery's cold shutdown)
    fleet.signal(signal.SIGQUIT)
    # Then every supervisor stops cold without a warm phase, the task still unacked
    assert fleet.wait(30) == 0
    assert fleet.log.count("stopped (cold)") == 2
    assert "warm shutdown: finishing" not in fleet.log
    assert all(gone(p) for p in members.values())
    assert long.state == "PENDING"
    assert app.broker.depth("default")["unacked"] == 1
