"""Signals and Task hooks in real workers: Celery's names and arguments, in the process that
runs the task (tests/apps/hooks.py records what each handler saw, with its pid)."""

import json
import signal

from engine.exceptions import TaskError
from tests.conftest import DEADLINE, wait_for

HOOKS_APP = "tests.apps.hooks"
RECORD = {"HOOKS_RECORD": "1"}


def records(client, prefix, kind=None, **match):
    found = [json.loads(raw) for raw in client.lrange(f"{prefix}:hooks", 0, -1)]
    return [r for r in found if (kind is None or r["kind"] == kind)
            and all(r.get(k) == v for k, v in match.items())]


def wait_records(client, prefix, kind, n=1, **match):
    return wait_for(lambda: (lambda rs: rs if len(rs) >= n else None)(
        records(client, prefix, kind, **match)), message=f"{n} {kind} record(s) {match}")


def test_task_hooks_and_signals_run_in_the_prefork_child_with_celerys_arguments(
        app, client, prefix, run_worker):
    # Given a prefork worker of an app with task signals and a Task base with every hook
    worker = run_worker("--pool", "prefork", "-c", "2", app=HOOKS_APP, extra_env=RECORD)
    # When a task succeeds, one fails and one is retried once
    plain = app.send_task("hooks.plain")
    pid = plain.get(timeout=DEADLINE)
    ok = app.send_task("hooks.add", args=(2, 3))
    bad = app.send_task("hooks.fail")
    flaky = app.send_task("hooks.flaky")
    assert ok.get(timeout=DEADLINE) == 5
    assert flaky.get(timeout=DEADLINE) == "ok"
    try:
        bad.get(timeout=DEADLINE)
    except (ValueError, TaskError) as exc:
        assert "boom" in str(exc)
    else:
        raise AssertionError("hooks.fail did not fail")

    # Then the task signals fired in the child that ran the task, not in the supervisor
    [pre] = wait_records(client, prefix, "prerun", id=plain.id)
    children = {c.pid for c in worker.children()}
    assert pre["pid"] == pid and pid in children and pid != worker.pid
    assert pre["same"] is True and pre["args"] == []
    # success: Task.before_start, on_success, after_return (einfo None), signals
    [before] = wait_records(client, prefix, "before_start", id=ok.id)
    assert before["args"] == [2, 3] and before["pid"] in children
    assert wait_records(client, prefix, "on_success", id=ok.id)[0]["retval"] == 5
    [after] = wait_records(client, prefix, "after_return", id=ok.id)
    assert (after["status"], after["retval"], after["einfo"]) == ("SUCCESS", 5, None)
    assert wait_records(client, prefix, "success", id=ok.id)[0]["result"] == 5
    [post] = wait_records(client, prefix, "postrun", id=ok.id)
    assert (post["state"], post["retval"]) == ("SUCCESS", 5)
    # failure: on_failure with einfo, task_failure (filtered by the task's name)
    [on_failure] = wait_records(client, prefix, "on_failure", id=bad.id)
    assert on_failure["exc"] == "ValueError('boom')" == on_failure["einfo_exc"]
    [failure] = wait_records(client, prefix, "failure", id=bad.id)
    assert failure["exception"] == "ValueError('boom')"
    assert failure["einfo_has_type"] and failure["has_tb"]
    assert wait_records(client, prefix, "after_return", id=bad.id)[0]["status"] == "FAILURE"
    assert wait_records(client, prefix, "postrun", id=bad.id)[0]["state"] == "FAILURE"
    # retry: on_retry gets the exception given to retry(), task_retry the Retry; no
    # after_return for the RETRY attempt (Celery's rule), one for the final SUCCESS
    assert wait_records(client, prefix, "on_retry", id=flaky.id)[0]["exc"] == "KeyError('again')"
    assert wait_records(client, prefix, "retry", id=flaky.id)[0]["reason"] == "KeyError('again')"
    returns = wait_records(client, prefix, "after_return", id=flaky.id)
    assert [r["status"] for r in returns] == ["SUCCESS"]
    assert [r["state"] for r in records(client, prefix, "postrun", id=flaky.id)] == \
        ["RETRY", "SUCCESS"]
    # task_received ran in the supervisor, once per delivery
    assert {r["pid"] for r in records(client, prefix, "received")} == {worker.pid}
    assert len(records(client, prefix, "received", id=flaky.id)) == 2
    # the handler that raises was logged and changed nothing
    assert "a handler with a bug" in worker.log


def test_sender_filter_by_name_leaves_other_tasks_alone(app, client, prefix, run_worker):
    # Given task_failure connected with sender="hooks.fail"
    run_worker("--pool", "threads", "-c", "2", app=HOOKS_APP, extra_env=RECORD)
    # When another task fails
    other = app.send_task("hooks.other_fail")
    try:
        other.get(timeout=DEADLINE)
    except (ValueError, TaskError):
        pass
    # Then its postrun fired but the filtered handler did not
    wait_records(client, prefix, "postrun", id=other.id)
    assert records(client, prefix, "failure", id=other.id) == []


def test_worker_process_init_once_in_every_prefork_child_after_the_fork(
        app, client, prefix, run_worker):
    # Given a prefork worker with two children
    worker = run_worker("--pool", "prefork", "-c", "2", app=HOOKS_APP, extra_env=RECORD)
    children = {c.pid for c in worker.children()}
    # Then worker_process_init ran once in each child and never in the supervisor;
    # worker_init and worker_ready in the supervisor
    inits = wait_records(client, prefix, "process_init", n=2)
    assert sorted(r["pid"] for r in inits) == sorted(children)
    [init] = records(client, prefix, "worker_init")
    assert init["pid"] == worker.pid and init["sender"] == "Supervisor"
    assert wait_records(client, prefix, "worker_ready")[0]["pid"] == worker.pid
    # When the worker stops warm
    assert worker.stop() == 0
    # Then each child sent worker_process_shutdown (exit code 0) and the supervisor
    # worker_shutdown
    downs = wait_records(client, prefix, "process_shutdown", n=2)
    assert sorted(r["pid"] for r in downs) == sorted(children)
    assert all(r["reported_pid"] == r["pid"] and r["exitcode"] == 0 for r in downs)
    assert wait_records(client, prefix, "worker_shutdown")[0]["pid"] == worker.pid


def test_worker_process_init_in_the_worker_itself_when_its_pool_runs_tasks_in_process(
        app, client, prefix, run_worker):
    # Given a threads worker (its tasks run in the worker's own process)
    worker = run_worker("--pool", "threads", "-c", "2", app=HOOKS_APP, extra_env=RECORD)
    # Then worker_process_init ran once, there, before any task
    [init] = wait_records(client, prefix, "process_init")
    assert init["pid"] == worker.pid
    assert app.send_task("hooks.plain").get(timeout=DEADLINE) == worker.pid
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    [down] = wait_records(client, prefix, "process_shutdown")
    assert (down["pid"], down["exitcode"]) == (worker.pid, 0)


def test_a_lane_process_sends_worker_process_init_but_not_the_worker_signals(
        app, client, prefix, run_worker):
    # Given a supervisor whose only lane runs in a process of its own
    worker = run_worker("--lane", "default=threads:2,isolate=yes", app=HOOKS_APP,
                        extra_env=RECORD)
    lane_pid = app.send_task("hooks.plain").get(timeout=DEADLINE)
    # Then worker_process_init ran in the lane process, worker_init only in the supervisor
    assert lane_pid != worker.pid and lane_pid in {c.pid for c in worker.children()}
    assert [r["pid"] for r in wait_records(client, prefix, "process_init")] == [lane_pid]
    assert [r["pid"] for r in records(client, prefix, "worker_init")] == [worker.pid]
    assert [r["pid"] for r in wait_records(client, prefix, "worker_ready")] == [worker.pid]


def test_unknown_and_revoked_signals_in_the_supervisor(app, client, prefix, run_worker):
    # Given a worker
    worker = run_worker("--pool", "threads", "-c", "1", app=HOOKS_APP, extra_env=RECORD)
    # When a message names a task nobody registered, and a task is revoked before it runs
    unknown = app.send_task("hooks.nobody")
    revoked = app.send_task("hooks.add", args=(1, 1), countdown=2)
    revoked.revoke()
    # Then task_unknown and task_revoked fired in the supervisor with Celery's arguments
    [u] = wait_records(client, prefix, "unknown", id=unknown.id)
    assert (u["name"], u["pid"]) == ("hooks.nobody", worker.pid)
    [r] = wait_records(client, prefix, "revoked", id=revoked.id)
    assert (r["expired"], r["terminated"], r["pid"]) == (False, False, worker.pid)


def test_class_based_task_registered_with_register_task_runs_in_a_worker(app, run_worker):
    # Given a class-based task (run() on a Task subclass, registered with register_task)
    worker = run_worker("--pool", "prefork", "-c", "1", app=HOOKS_APP)
    # When it is sent by name, with a keyword argument
    result = app.send_task("hooks.charge", args=(12,), kwargs={"currency": "USD"})
    # Then it ran in the child like any task
    value = result.get(timeout=DEADLINE)
    assert value["charged"] == 12 and value["currency"] == "USD"
    assert value["pid"] in {c.pid for c in worker.children()}


def test_setup_logging_receiver_takes_over_the_worker_logging(run_worker):
    # Given an app with a setup_logging receiver
    worker = run_worker("--pool", "threads", "-c", "1", "-B", app="tests.apps.custom_logging")
    # Then the worker's lines come through its handler, not the command line's format
    ready = [line for line in worker.log.splitlines() if "ready:" in line]
    assert ready and all(line.startswith("CUSTOM INFO engine.worker: ") for line in ready)
    assert not any(" INFO    " in line for line in worker.log.splitlines()
                   if "engine.worker" in line)


def test_beat_init_is_sent_when_beat_starts(client, prefix, run_worker):
    worker = run_worker("--pool", "threads", "-c", "1", "-B", app="tests.apps.custom_logging")
    [entry] = wait_for(lambda: client.lrange(f"{prefix}:beat_init", 0, -1))
    assert entry.decode() == f"Beat:{worker.pid}"


def test_task_rejected_for_a_message_that_is_not_a_task(app, client, prefix, run_worker):
    worker = run_worker("--pool", "threads", "-c", "1", app=HOOKS_APP, extra_env=RECORD)
    client.xadd(app.broker.keys.queue("default"), {"m": b"not msgpack \xc1"})
    [r] = wait_records(client, prefix, "rejected")
    assert r["message"].startswith("not msgpack") and r["pid"] == worker.pid
    assert "undecodable" in r["exc"]
