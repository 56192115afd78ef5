"""The dashboard in a real headless Chromium, against real workers and a real Redis."""

from __future__ import annotations

import json
import uuid

import pytest

from engine import AsyncResult, message
from engine.exceptions import TaskError
from tests.apps.basic import CustomError
from tests.conftest import DEADLINE, wait_for
from tests.dashboard.conftest import ARTIFACTS, basic, http

from playwright.sync_api import expect  # noqa: E402  (the test extra installs it)

TIMEOUT_MS = DEADLINE * 1000


def snap(page, name: str) -> None:
    """A screenshot mid-test (teardown takes the last one)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def chart_pixels(page) -> str:
    return page.evaluate("() => document.querySelector('#chart canvas').toDataURL()")


def test_overview_shows_a_running_worker_and_its_chart_moves(app, run_worker, dashboard, page):
    # Given a threads worker and the overview open on it
    run_worker("--pool", "threads", "-c", "2", "-n", "dash-overview")
    page.goto(dashboard.url + "/")
    row = page.locator('#workers tr[data-worker="dash-overview"]')
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_contain_text("threads")
    expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
    expect(page.locator('#queues tr[data-queue="default"]')).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_selector("#chart canvas")
    before = chart_pixels(page)

    # When tasks succeed and fail while the page is open
    results = app.tasks["tests.apps.basic.add"].delay_many([(i, i) for i in range(40)])
    failures = [app.tasks["tests.apps.basic.fail"].delay(f"boom {i}") for i in range(3)]
    assert app.gather(results, timeout=DEADLINE) == [2 * i for i in range(40)]
    for failure in failures:
        with pytest.raises((CustomError, TaskError)):
            failure.get(timeout=DEADLINE)

    # Then the chart's data and its drawing change without a reload
    page.wait_for_function(
        "() => Number(document.getElementById('chart').dataset.succeeded) >= 40 && "
        "Number(document.getElementById('chart').dataset.failed) >= 3", timeout=TIMEOUT_MS)
    wait_for(lambda: chart_pixels(page) != before, message="the chart to be redrawn")
    expect(page.locator("#sum-succeeded")).not_to_have_text("0")
    # and the worker's counters follow (its snapshot is refreshed every few heartbeats)
    expect(row.locator("td").nth(5)).not_to_have_text("0", timeout=TIMEOUT_MS)


def test_a_failed_tasks_traceback_is_shown_on_its_page(app, run_worker, dashboard, page):
    # Given a task that failed with markup in its message
    run_worker("--pool", "solo")
    hostile = '<b id="injected">bold</b><script>window.pwned = 1</script>'
    result = app.tasks["tests.apps.basic.fail"].delay(hostile)
    with pytest.raises((CustomError, TaskError)):
        result.get(timeout=DEADLINE)

    # When the tasks page is filtered to failures and the task is opened from there
    page.goto(dashboard.url + "/tasks")
    page.select_option("#filter-state", "FAILURE")
    page.fill("#filter-name", "basic.fail")
    link = page.locator(f'#tasks tr[data-task="{result.id}"] a')
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    snap(page, "tasks-filtered-to-failures")
    link.click()

    # Then its page shows the exception and the traceback, as text
    page.wait_for_url(f"**/tasks/{result.id}")
    expect(page.locator("#task-state")).to_have_text("FAILURE", timeout=TIMEOUT_MS)
    traceback = page.locator("#task-traceback")
    expect(traceback).to_contain_text("Traceback", timeout=TIMEOUT_MS)
    expect(traceback).to_contain_text("CustomError")
    expect(traceback).to_contain_text(hostile)
    expect(page.locator("#task-exception")).to_contain_text("CustomError")
    expect(page.locator("#task-name")).to_have_text("tests.apps.basic.fail")
    assert page.locator("#injected").count() == 0
    assert page.evaluate("() => window.pwned") is None


def test_requeueing_a_dead_letter_makes_it_run(app, run_worker, dashboard, page):
    # Given a good message that ended in the dead-letter stream of its queue
    task_id = str(uuid.uuid4())
    body = message.encode_message(task_id, "tests.apps.basic.add", [20, 22], {})
    pipe = app.client.pipeline()
    pipe.execute_command(*app.broker.dead_letter_command("default", body, "delivered too many times"))
    pipe.sadd(app.broker.keys.queues, "default")
    pipe.execute()
    run_worker("--pool", "threads", "-c", "2")

    # When it is requeued from the queues page
    page.goto(dashboard.url + "/queues?queue=default")
    row = page.locator(f'#dead-letters tr[data-task="{task_id}"]')
    expect(row).to_contain_text("delivered too many times", timeout=TIMEOUT_MS)
    expect(row).to_contain_text("tests.apps.basic.add")
    expect(row).to_contain_text("[20, 22]")
    snap(page, "dead-letter-before-requeue")
    row.locator("button.requeue").click()

    # Then the task runs, and the dead letter is gone
    assert AsyncResult(task_id, app).get(timeout=DEADLINE) == 42
    expect(page.locator("#flash")).to_contain_text("requeued")
    expect(row).to_have_count(0, timeout=TIMEOUT_MS)
    assert app.client.xlen(app.broker.keys.dlq("default")) == 0


def test_deleting_a_dead_letter(app, dashboard, page):
    # Given a dead letter that cannot even be decoded
    pipe = app.client.pipeline()
    pipe.execute_command(*app.broker.dead_letter_command("mail", b"\xc1garbage", "undecodable message"))
    pipe.sadd(app.broker.keys.queues, "mail")
    pipe.execute()
    page.on("dialog", lambda dialog: dialog.accept())

    # When it is deleted from the queues page
    page.goto(dashboard.url + "/queues")
    page.locator('#queues tr[data-queue="mail"] button').click()
    row = page.locator("#dead-letters tr[data-entry]")
    expect(row).to_contain_text("undecodable", timeout=TIMEOUT_MS)
    expect(row.locator("button.requeue")).to_be_disabled()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    entry = row.get_attribute("data-entry")
    status, _ = http(f"{dashboard.url}/api/queues/mail/dead/{entry}/requeue", method="POST",
                     data=b"{}", headers={"Content-Type": "application/json",
                                          "Origin": dashboard.url, "X-CSRF-Token": token})
    assert status == 409   # the server refuses too: it would only come back
    row.locator("button.delete").click()

    # Then it is gone from Redis and from the page
    expect(page.locator("#dead-letters tr[data-entry]")).to_have_count(0, timeout=TIMEOUT_MS)
    assert app.client.xlen(app.broker.keys.dlq("mail")) == 0


def test_basic_auth_refuses_a_wrong_password(start_dashboard, open_page):
    # Given a dashboard that requires a password (from the environment)
    server = start_dashboard(extra_env={"ENGINE_DASHBOARD_AUTH": "admin:s3cret"})

    # When a browser brings the wrong one, or none
    wrong = open_page(http_credentials={"username": "admin", "password": "guess"})
    response = wrong.goto(server.url + "/")

    # Then it is refused, everywhere, and the right one is let in
    assert response.status == 401
    expect(wrong.locator("body")).to_contain_text("password required")
    assert http(server.url + "/")[0] == 401
    assert http(server.url + "/api/overview", headers=basic("admin", "s3cre"))[0] == 401
    assert http(server.url + "/static/dashboard.js", headers=basic("admin", "s3cret!"))[0] == 401
    right = open_page(http_credentials={"username": "admin", "password": "s3cret"})
    assert right.goto(server.url + "/").status == 200
    expect(right.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)


def test_actions_refuse_cross_site_requests(app, dashboard, page):
    # Given a dead letter and the token a page of the dashboard carries
    pipe = app.client.pipeline()
    pipe.execute_command(*app.broker.dead_letter_command("default", message.encode_message("x", "t", [], {}), "test"))
    pipe.execute()
    entry = app.client.xrange(app.broker.keys.dlq("default"))[0][0].decode()
    page.goto(dashboard.url + "/workers")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    url = f"{dashboard.url}/api/queues/default/dead/{entry}/delete"
    good = {"Content-Type": "application/json", "Origin": dashboard.url, "X-CSRF-Token": token}

    # When actions come without the token, from another origin, or as a form
    refused = [
        http(url, method="POST", data=b"{}", headers={**good, "X-CSRF-Token": "nope"}),
        http(url, method="POST", data=b"{}", headers={**good, "Origin": "http://evil.example"}),
        http(url, method="POST", data=b"a=1",
             headers={**good, "Content-Type": "application/x-www-form-urlencoded"}),
        http(url, method="GET"),
    ]

    # Then none of them did anything; with the token and our origin it works
    assert [status for status, _ in refused] == [403, 403, 415, 405]
    assert app.client.xlen(app.broker.keys.dlq("default")) == 1
    status, text = http(url, method="POST", data=b"{}", headers=good)
    assert (status, json.loads(text)["ok"]) == (200, True)
    assert app.client.xlen(app.broker.keys.dlq("default")) == 0


def test_workers_page_grows_the_pool_and_shuts_the_worker_down(app, run_worker, dashboard, page):
    # Given a threads worker of two slots on the workers page
    worker = run_worker("--pool", "threads", "-c", "2", "-n", "dash-steer")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(dashboard.url + "/workers")
    row = page.locator('#workers tr[data-worker="dash-steer"]')
    expect(row).to_contain_text("online", timeout=TIMEOUT_MS)

    # When its pool is grown by two
    row.locator("input.n").fill("2")
    row.locator("button.grow").click()

    # Then the command went to that worker, and its snapshot shows the bigger pool (the
    # reply itself may miss the action's short wait on a busy machine)
    expect(page.locator("#flash")).to_contain_text("dash-steer", timeout=TIMEOUT_MS)
    expect(row.locator("td").nth(6)).to_have_text("4", timeout=TIMEOUT_MS)
    snap(page, "workers-after-grow")

    # When it is shut down from the page, it stops warm and leaves the list
    row.locator("button.shutdown").click()
    assert worker.wait(DEADLINE) == 0
    expect(row).to_have_count(0, timeout=TIMEOUT_MS)


def test_revoking_a_waiting_task_from_the_workers_page(app, dashboard, page):
    # Given a task waiting with no worker to run it
    result = app.tasks["tests.apps.basic.add"].apply_async((1, 2), countdown=3600)

    # When its id is revoked from the workers page
    page.goto(dashboard.url + "/workers")
    page.fill("#revoke-id", result.id)
    page.click("#revoke-form button[type=submit]")

    # Then the revocation is stored for any worker that starts later
    expect(page.locator("#flash")).to_contain_text("revoked", timeout=TIMEOUT_MS)
    assert app.client.zscore(app.broker.keys.revoked, result.id) is not None
