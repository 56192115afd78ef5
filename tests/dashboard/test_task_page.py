"""What a task's page and the task list know (issue: dead letters, arguments, messages), the
workers table after a resize and actions on unknown workers: real workers, a real
``engine dashboard`` process, Chromium."""

from __future__ import annotations

import json
import uuid

import pytest
from playwright.sync_api import expect

from engine import control, message
from engine.dashboard import fleet
from engine.exceptions import TaskError
from tests.apps.basic import CustomError
from tests.conftest import DEADLINE, wait_for
from tests.dashboard.conftest import http

TIMEOUT_MS = DEADLINE * 1000


def test_a_dead_lettered_task_shows_its_state_and_reason(app, run_worker, dashboard, page):
    # Given a task the worker ran and then filed as a dead letter (it rejected itself)
    run_worker("--pool", "threads", "-c", "2")
    result = app.tasks["tests.apps.basic.reject"].delay(False)
    wait_for(lambda: app.client.xlen(app.broker.keys.dlq("default")) == 1, DEADLINE,
             message="the dead letter")

    # When its page is opened
    page.goto(f"{dashboard.url}/tasks/{result.id}")

    # Then it says DEAD-LETTERED, with the reason the worker gave, and the dead letter is
    # in its timeline after the worker's events
    expect(page.locator("#task-state")).to_have_text("DEAD-LETTERED", timeout=TIMEOUT_MS)
    expect(page.locator("#task-dead")).to_contain_text("rejected: not for me")
    expect(page.locator("#task-dead")).to_contain_text("queue default")
    expect(page.locator("#task-dead-link")).to_have_attribute(
        "href", "/queues?queue=default")
    dead_row = page.locator('#task-timeline tr[data-event="dead-lettered"]')
    expect(dead_row).to_contain_text("rejected: not for me")
    expect(page.locator('#task-timeline tr[data-event="task-received"]')).to_have_count(
        1, timeout=TIMEOUT_MS)
    events = page.locator("#task-timeline tr[data-event]")
    expect(events.last).to_have_attribute("data-event", "dead-lettered")
    expect(page.locator("#task-name")).to_have_text("tests.apps.basic.reject")


def test_a_task_no_worker_could_run_is_dead_lettered_not_pending(app, run_worker, dashboard,
                                                                  page):
    # Given a message naming a task no worker knows, filed by the worker that took it
    run_worker("--pool", "solo")
    task_id = str(uuid.uuid4())
    body = message.encode_message(task_id, "tests.apps.basic.missing", [7], {"to": "x"})
    app.client.xadd(app.broker.keys.queue("default"), {"m": body})
    wait_for(lambda: app.client.xlen(app.broker.keys.dlq("default")) == 1, DEADLINE,
             message="the dead letter")

    # When its page is opened
    page.goto(f"{dashboard.url}/tasks/{task_id}")

    # Then it is DEAD-LETTERED (no event was ever sent for it), with the worker's reason and
    # the arguments the dead letter holds
    expect(page.locator("#task-state")).to_have_text("DEAD-LETTERED", timeout=TIMEOUT_MS)
    expect(page.locator("#task-dead")).to_contain_text(
        "unknown task 'tests.apps.basic.missing'")
    expect(page.locator("#task-timeline tr[data-event]")).to_have_count(1)
    expect(page.locator("#task-timeline tr[data-event]")).to_have_attribute(
        "data-event", "dead-lettered")
    expect(page.locator("#task-name")).to_have_text("tests.apps.basic.missing")
    expect(page.locator("#task-args")).to_have_text("[7]")
    expect(page.locator("#task-kwargs")).to_have_text('{"to": "x"}')


def test_the_task_page_shows_the_arguments_from_the_received_event(app, run_worker,
                                                                   dashboard, page):
    # Given a task that succeeded (no dead letter holds its message)
    run_worker("--pool", "solo")
    result = app.tasks["tests.apps.basic.add"].apply_async((20,), {"y": 22})
    assert result.get(timeout=DEADLINE) == 42

    # When its page is opened
    page.goto(f"{dashboard.url}/tasks/{result.id}")

    # Then its arguments are those of the task-received event, as text
    expect(page.locator("#task-state")).to_have_text("SUCCESS", timeout=TIMEOUT_MS)
    expect(page.locator("#task-args")).to_have_text("[20]", timeout=TIMEOUT_MS)
    expect(page.locator("#task-kwargs")).to_have_text("{'y': 22}")
    expect(page.locator("#task-result")).to_have_text("42")


def test_the_task_list_shows_the_exception_message(app, run_worker, dashboard, page):
    # Given a task that failed with a message
    run_worker("--pool", "solo")
    result = app.tasks["tests.apps.basic.fail"].delay("the disk is full")
    with pytest.raises((CustomError, TaskError)):
        result.get(timeout=DEADLINE)

    # When the task list is opened
    page.goto(dashboard.url + "/tasks")

    # Then its row names the exception type and its message
    row = page.locator(f'#tasks tr[data-task="{result.id}"]')
    expect(row.locator("td.exception")).to_contain_text("CustomError", timeout=TIMEOUT_MS)
    expect(row.locator("td.exception")).to_contain_text(": the disk is full")


def test_the_fleet_shows_the_new_pool_size_as_soon_as_the_worker_answers(app, run_worker):
    # Given a threads worker of two slots, as the dashboard reads it
    run_worker("--pool", "threads", "-c", "2", "-n", "dash-fresh")
    wait_for(lambda: [w["concurrency"] for w in fleet.workers(app)] == [2], DEADLINE,
             message="the worker's first snapshot")
    wait_for(lambda: app.client.pubsub_numsub(app.broker.keys.control)[0][1] == 1, DEADLINE,
             message="the worker to listen for control commands")

    # When its pool grows by three, and then shrinks by one
    for verb, n, size in (("pool-grow", 3, 5), ("pool-shrink", 1, 4)):
        replies = control.broadcast(app, verb, destination=["dash-fresh"], timeout=DEADLINE,
                                    n=n)
        assert replies[0]["reply"]["concurrency"] == size

        # Then the snapshot the dashboard reads already holds it (not a few beats later)
        assert [w["concurrency"] for w in fleet.workers(app)] == [size]


def test_an_action_on_a_worker_that_does_not_exist_is_404(app, run_worker, dashboard, page):
    # Given a page's token and a live worker
    run_worker("--pool", "threads", "-c", "1", "-n", "dash-real")
    page.goto(dashboard.url + "/workers")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    headers = {"Content-Type": "application/json", "Origin": dashboard.origin,
               "X-CSRF-Token": token}

    # When a resize and a shutdown are posted for a name no worker has
    answers = [http(f"{dashboard.url}/api/workers/dash-nobody/{verb}", method="POST",
                    data=b'{"n": 1}', headers=headers)
               for verb in ("pool-grow", "pool-shrink", "shutdown")]

    # Then each is a 404 that says so, and the real worker still answers
    assert [status for status, _ in answers] == [404, 404, 404]
    assert all(json.loads(text) == {"ok": False, "error": "no such worker 'dash-nobody'"}
               for _, text in answers)
    status, text = http(f"{dashboard.url}/api/workers/dash-real/pool-grow", method="POST",
                        data=b'{"n": 1}', headers=headers)
    assert (status, json.loads(text)["ok"]) == (200, True)
