"""Celery's smaller task features in real workers: custom headers (also added by a
before_task_publish receiver), Ignore, and results nobody will store."""

from engine import signals
from tests.conftest import DEADLINE, wait_for

HOOKS_APP = "tests.apps.hooks"


def test_headers_travel_in_the_message_to_self_request_headers(app, run_worker):
    # Given a producer whose before_task_publish receiver adds a header to one task
    published = []

    def add_header(sender=None, headers=None, body=None, routing_key=None, **kwargs):
        headers["added_by_hook"] = routing_key

    def after(sender=None, headers=None, **kwargs):
        published.append((sender, headers["id"], headers["task"]))

    signals.before_task_publish.connect(add_header, sender="hooks.headers")
    signals.after_task_publish.connect(after)
    try:
        run_worker("--pool", "prefork", "-c", "1", app=HOOKS_APP)
        # When it is sent with headers of its own
        result = app.send_task("hooks.headers", headers={"tenant": "acme"})
        plain = app.send_task("hooks.headers")
        # Then the task sees both, and the receiver only touched the task it filtered on
        assert result.get(timeout=DEADLINE) == {"tenant": "acme", "added_by_hook": "default"}
        assert plain.get(timeout=DEADLINE) == {"added_by_hook": "default"}
        assert published == [("hooks.headers", result.id, "hooks.headers"),
                             ("hooks.headers", plain.id, "hooks.headers")]
    finally:
        signals.before_task_publish.disconnect(add_header, sender="hooks.headers")
        signals.after_task_publish.disconnect(after)


def test_ignore_acks_the_message_and_stores_nothing_more(app, client, run_worker):
    # Given a task that sets its own state and raises Ignore
    worker = run_worker("--pool", "prefork", "-c", "1", app=HOOKS_APP)
    result = app.send_task("hooks.ignored")
    # Then its state is the one it set, the message is acknowledged (not retried, not
    # dead-lettered), and no final record is written
    wait_for(lambda: result.state == "HANDLED-ELSEWHERE", message="the task's own state")
    wait_for(lambda: app.broker.depth("default")["unacked"] == 0, message="the ack")
    assert result.info == {"by": "the task"}
    marker = app.send_task("hooks.add", args=(1, 1))
    assert marker.get(timeout=DEADLINE) == 2
    assert client.exists(app.backend.result_key(result.id)) == 0
    assert client.xlen(f"{app.conf.key_prefix}:dlq:{{default}}") == 0
    assert f"hooks.ignored[{result.id}] failed" not in worker.log
    assert f"hooks.ignored[{result.id}] will retry" not in worker.log


def test_get_of_a_result_sent_with_ignore_result_returns_none_at_once(app, run_worker):
    from tests.apps.basic import add, noop
    # no worker runs: a get that waited for a record would time out
    assert add.apply_async((1, 2), ignore_result=True).get(timeout=2) is None
    assert app.gather(noop.delay_many([()] * 3), timeout=2) == [None, None, None]
    assert noop.delay().get(timeout=2) is None


def test_task_logger_records_carry_the_task(app, run_worker):
    worker = run_worker("--pool", "threads", "-c", "1", app=HOOKS_APP)
    assert app.send_task("hooks.logs").get(timeout=DEADLINE) is True
    wait_for(lambda: "logged from a task" in worker.log, message="the task's log line")
    assert "engine.task.tests.apps.hooks" in worker.log
