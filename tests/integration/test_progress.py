"""Custom states: ``self.update_state(state="PROGRESS", meta=...)`` from inside a running
task, read by the producer as ``AsyncResult.state`` and ``.info`` while the task runs."""

import pytest

from engine.exceptions import TaskError
from tests.conftest import DEADLINE, wait_for

HOOKS_APP = "tests.apps.hooks"


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_the_producer_reads_progress_while_the_task_runs(app, client, prefix, run_worker, pool):
    # Given a worker and a task that publishes PROGRESS, then waits on a gate in Redis
    run_worker("--pool", pool, "-c", "1", app=HOOKS_APP)
    gate = f"{prefix}:gate"
    result = app.send_task("hooks.progress", args=(gate, 10))
    # When the producer looks while it waits
    wait_for(lambda: result.state == "PROGRESS", message="the PROGRESS state")
    # Then it sees the custom state and its meta, and the task is not ready
    assert result.info == {"done": 3, "total": 10} == result.result
    assert not result.ready()
    # When the test opens the gate, the task ends and its result replaces the progress
    client.rpush(gate, "open")
    assert result.get(timeout=DEADLINE) == "done"
    assert result.state == "SUCCESS" and result.info == "done"


def test_info_of_a_failure_is_the_exception(app, run_worker):
    run_worker("--pool", "threads", "-c", "1", app=HOOKS_APP)
    result = app.send_task("hooks.fail")
    with pytest.raises((ValueError, TaskError)):
        result.get(timeout=DEADLINE)
    assert result.state == "FAILURE"
    assert isinstance(result.info, (ValueError, TaskError)) and "boom" in str(result.info)


def test_update_state_outside_a_task_needs_an_id_and_a_state(app):
    @app.task(bind=True, name="tests.progress_outside")
    def report(self):
        pass

    with pytest.raises(ValueError, match="task_id"):
        report.update_state(state="PROGRESS", meta={})
    with pytest.raises(ValueError, match="state"):
        report.update_state(task_id="x", meta={})
    with pytest.raises(TypeError, match="meta"):
        report.update_state(task_id="x", state="PROGRESS", meta=object())
    # with an id, from anywhere: the record is there for the producer
    report.update_state(task_id="some-id", state="STAGE-2", meta=[1, 2])
    result = app.AsyncResult("some-id")
    assert (result.state, result.info) == ("STAGE-2", [1, 2])
