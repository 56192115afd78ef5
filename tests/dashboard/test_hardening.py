"""The dashboard's guards off loopback, and task ids with slashes (issue 14, items 6 and 8):
a real ``engine dashboard`` process, plain HTTP, and Chromium for the link."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.apps.basic import add
from tests.conftest import DEADLINE, ROOT
from tests.dashboard.conftest import basic, free_port, http

TIMEOUT_MS = DEADLINE * 1000


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "203.0.113.9"])
def test_a_non_loopback_address_without_a_password_is_refused(env, address):
    # Given no password anywhere
    env = {k: v for k, v in env.items() if k != "ENGINE_DASHBOARD_AUTH"}
    # When the real command is asked to listen off loopback
    done = subprocess.run(
        [sys.executable, "-m", "engine", "dashboard", "-A", "tests.apps.basic",
         "--address", address, "--port", str(free_port())],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=DEADLINE)
    # Then it refuses before listening: one clear line, a non-zero exit
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"engine dashboard: error: refusing to listen on {address} "
                               "without a password")
    assert "--basic-auth" in lines[0] and "--insecure-no-auth" in lines[0]
    assert done.stdout == ""


def test_off_loopback_only_the_machines_own_names_are_accepted(start_dashboard):
    # Given a dashboard on every interface, with a password and one extra name
    server = start_dashboard("--address", "0.0.0.0", "--allowed-host", "dash.example.com",
                             extra_env={"ENGINE_DASHBOARD_AUTH": "admin:s3cret"})
    auth = basic("admin", "s3cret")

    def status(host: str) -> int:
        return http(server.url + "/api/overview", headers={**auth, "Host": host})[0]

    # When requests name a foreign host (a DNS-rebinding page, a stray proxy)
    # Then they get 400, and the machine's own names, loopback and the extra one pass
    assert status(f"evil.example:{server.port}") == 400
    assert status("evil.example") == 400
    assert status(f"dash.example.com.evil.example:{server.port}") == 400
    assert status(f"127.0.0.1:{server.port}") == 200
    assert status(f"localhost:{server.port}") == 200
    assert status(f"{socket.gethostname()}:{server.port}") == 200
    assert status("dash.example.com") == 200
    # And the password is still required whatever the Host
    assert http(server.url + "/api/overview", headers={"Host": "localhost"})[0] == 401


def test_insecure_no_auth_runs_open_with_a_warning_and_still_checks_hosts(start_dashboard):
    server = start_dashboard("--address", "0.0.0.0", "--insecure-no-auth")
    assert http(server.url + "/api/overview")[0] == 200
    assert http(server.url + "/api/overview", headers={"Host": "evil.example"})[0] == 400
    assert "without a password (--insecure-no-auth)" in server.log


def test_on_loopback_a_foreign_host_is_refused(dashboard):
    assert http(dashboard.url + "/api/overview", headers={"Host": "evil.example"})[0] == 400
    assert http(dashboard.url + "/api/overview")[0] == 200


def test_a_task_id_with_slashes_has_its_page(app, run_worker, dashboard, page):
    # Given a task whose id holds slashes, run to the end by a worker
    run_worker("--pool", "solo")
    task_id = "batch/7/item-3"
    assert add.apply_async((3, 4), task_id=task_id).get(timeout=DEADLINE) == 7
    # When its page and its API are asked for (links quote the id)
    quoted = "batch%2F7%2Fitem-3"
    status, text = http(dashboard.url + "/api/tasks/" + quoted)
    # Then both answer for that task
    assert status == 200 and json.loads(text)["id"] == task_id
    assert json.loads(text)["state"] == "SUCCESS"
    status, html = http(dashboard.url + "/tasks/" + quoted)
    assert status == 200 and f'data-task-id="{task_id}"' in html
    # And the link in the task list leads there in a browser
    page.goto(dashboard.url + "/tasks")
    link = page.locator(f'#tasks tr[data-task="{task_id}"] a').first
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    link.click()
    expect(page.locator("#task-state")).to_have_text("SUCCESS", timeout=TIMEOUT_MS)
    assert page.url.endswith("/tasks/" + quoted)
