"""The dashboard under ``--url-prefix`` (every request the browser makes carries it), and
flow control on the queues page (issue 18): a real dashboard, real workers, Chromium."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from engine.testing import free_port
from tests.conftest import DEADLINE, ROOT, wait_for
from tests.dashboard.conftest import http

TIMEOUT_MS = DEADLINE * 1000
PREFIX = "/ops/engine"


def test_every_request_of_the_dashboard_carries_its_url_prefix(app, run_worker,
                                                                start_dashboard, open_page):
    # Given a dashboard served under a prefix, a worker, and a task it ran
    run_worker("--pool", "threads", "-c", "2", "-n", "dash-prefixed")
    result = app.tasks["tests.apps.basic.add"].delay(1, 2)
    assert result.get(timeout=DEADLINE) == 3
    server = start_dashboard("--url-prefix", PREFIX + "/")
    page = open_page()
    asked: list[str] = []
    answers: list[tuple[str, int]] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on("response", lambda response: answers.append((response.url, response.status)))
    page.on("dialog", lambda dialog: dialog.accept())

    # When its pages are walked through their own links, and an action is taken
    page.goto(server.url + "/")
    expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
    page.wait_for_selector("#chart canvas")
    page.click("nav >> text=Tasks")
    page.wait_for_url(f"**{PREFIX}/tasks")
    page.locator(f'#tasks tr[data-task="{result.id}"] a').click()
    page.wait_for_url(f"**{PREFIX}/tasks/{result.id}")
    expect(page.locator("#task-state")).to_have_text("SUCCESS", timeout=TIMEOUT_MS)
    page.click("nav >> text=Workers")
    page.wait_for_url(f"**{PREFIX}/workers")
    expect(page.locator('#workers tr[data-worker="dash-prefixed"]')).to_contain_text(
        "online", timeout=TIMEOUT_MS)
    page.fill("#revoke-id", "some-task")
    page.click("#revoke-form button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("revoked some-task", timeout=TIMEOUT_MS)
    page.click("nav >> text=Queues")
    page.wait_for_url(f"**{PREFIX}/queues")
    expect(page.locator('#queues tr[data-queue="default"]')).to_be_visible(timeout=TIMEOUT_MS)
    styled = page.evaluate("() => getComputedStyle(document.querySelector('header')).display")

    # Then every request had the prefix and got an answer, the stylesheet applied, the
    # action was done, and nothing answers without the prefix
    assert asked, "the browser asked for nothing"
    assert [url for url in asked if not urlsplit(url).path.startswith(PREFIX + "/")] == []
    assert [(url, status) for url, status in answers if status >= 400] == []
    paths = {urlsplit(url).path for url in asked}
    assert {f"{PREFIX}/static/dashboard.css", f"{PREFIX}/static/dashboard.js",
            f"{PREFIX}/api/stream", f"{PREFIX}/api/tasks", f"{PREFIX}/api/revoke",
            f"{PREFIX}/api/tasks/{result.id}"} <= paths
    assert styled == "flex"
    assert app.client.zscore(app.broker.keys.revoked, "some-task") is not None
    assert http(server.origin + "/")[0] == 404
    assert http(server.origin + "/static/dashboard.js")[0] == 404
    assert http(server.origin + PREFIX)[0] == 200   # redirected to the prefix's own /


@pytest.mark.parametrize("prefix", ["ops", "/a b", "/../x", "/x?y"])
def test_a_bad_url_prefix_is_one_clear_line(env, prefix):
    done = subprocess.run(
        [sys.executable, "-m", "engine", "dashboard", "-A", "tests.apps.basic",
         "--port", str(free_port()), "--url-prefix", prefix],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=DEADLINE)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"engine dashboard: error: --url-prefix {prefix!r}: expected "
                               "a path such as /ops/engine")


def test_the_url_prefix_setting_is_used_when_the_option_is_absent(env, start_dashboard):
    # Given the setting, from the environment a settings module would use
    server = start_dashboard(extra_env={"ENGINE_DASHBOARD_URL_PREFIX": "/from-conf"})
    # Then the dashboard answers under it, and not at /
    assert http(server.origin + "/from-conf/api/overview")[0] == 200
    assert '<a href="/from-conf/tasks"' in http(server.origin + "/from-conf/")[1]
    assert http(server.origin + "/api/overview")[0] == 404


def test_rate_limits_waiting_tasks_slots_and_paused_queues_are_shown(env, engine, run_worker,
                                                                    start_dashboard, page):
    from tests.apps.flow import app as flow_app
    flow_app.close()   # connections remade with this test's environment
    # Given a worker of the flow app, and the dashboard of that app
    run_worker("--pool", "threads", "-c", "4", "-n", "dash-flow", app="tests.apps.flow")
    server = start_dashboard(app="tests.apps.flow")
    wait_for(lambda: flow_app.client.pubsub_numsub(flow_app.broker.keys.control)[0][1] == 1,
             DEADLINE, message="the worker to listen for control commands")

    # When a rate limit is set and a queue paused with ``engine control``, more tasks are
    # sent than the limit lets run, and max_concurrency tasks hold their slots
    for verb in (["rate-limit", "tests.apps.flow.free", "1/m"], ["pause", "mail"]):
        done = engine("control", "-A", "tests.apps.flow", *verb)
        assert done.returncode == 0, done.stderr
    free = flow_app.tasks["tests.apps.flow.free"]
    results = [free.delay(i) for i in range(4)]
    exclusive = flow_app.tasks["tests.apps.flow.exclusive"]
    for _ in range(3):
        exclusive.delay(60)
    wait_for(lambda: results[0].ready() or any(r.ready() for r in results), DEADLINE,
             message="the one free task the limit lets through")

    # Then the queues page shows the limit, the held-back tasks, the slots and the pause
    page.goto(server.url + "/queues")
    row = page.locator('#limits tr[data-task="tests.apps.flow.free"]')
    expect(row.locator("td").nth(1)).to_have_text("1/m", timeout=TIMEOUT_MS)
    expect(row.locator("td").nth(3)).to_have_text("3", timeout=TIMEOUT_MS)
    declared = page.locator('#limits tr[data-task="tests.apps.flow.limited"]')
    expect(declared.locator("td").nth(1)).to_have_text("5/s")
    slots = page.locator('#limits tr[data-task="tests.apps.flow.exclusive"]')
    expect(slots.locator("td").nth(4)).to_have_text("2")
    expect(slots.locator("td").nth(5)).to_have_text("2 of 2", timeout=TIMEOUT_MS)
    expect(page.locator("#paused")).to_have_text("mail", timeout=TIMEOUT_MS)
    flow_app.close()
