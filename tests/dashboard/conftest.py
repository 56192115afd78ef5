"""Fixtures for the dashboard tests: a real ``engine dashboard`` process (an
``engine.testing.EngineProcess``, closed by pid at teardown) and headless Chromium.

The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (never a downloaded
browser build). Each test's page is photographed at teardown into
``test-artifacts/dashboard/<test>.png``; a JavaScript error on the page fails the test.
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.testing import EngineProcess, free_port
from tests.conftest import DEADLINE, ROOT, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]

NO_CHROMIUM = ("the browser tests need Debian's chromium at /usr/bin/chromium "
               "(apt-get install -y chromium)")


def http(url: str, *, method: str = "GET", headers: dict | None = None,
         data: bytes | None = None) -> tuple[int, str]:
    """One plain HTTP request (no browser): (status, body text)."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class DashboardServer(EngineProcess):
    """``python -m engine dashboard`` on a free port, as a real process (``engine.testing``)."""

    def __init__(self, env: dict, log_path: Path, *args: str,
                 app: str = "tests.apps.basic") -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        # served under --url-prefix (or its setting) when given: every path, assets included
        prefix = (args[args.index("--url-prefix") + 1] if "--url-prefix" in args
                  else env.get("ENGINE_DASHBOARD_URL_PREFIX", ""))
        self.url = self.origin + prefix.rstrip("/")
        super().__init__("dashboard", ["-A", app, "--port", str(self.port), *args],
                         env=env, log_path=log_path, cwd=ROOT)

    def wait_ready(self) -> "DashboardServer":
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited early:\n{self.log}")
            try:
                status, _ = http(self.url + "/static/dashboard.css")
            except OSError:
                return False
            return status in (200, 401)
        wait_for(answers, DEADLINE, interval=0.05, message="the dashboard to answer")
        return self


@pytest.fixture
def start_dashboard(env, tmp_path):
    started: list[DashboardServer] = []

    def start(*args: str, extra_env: dict | None = None,
              app: str = "tests.apps.basic") -> DashboardServer:
        server = DashboardServer(dict(env, **(extra_env or {})),
                                 tmp_path / f"dashboard-{len(started)}.log", *args, app=app)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.close()


@pytest.fixture
def dashboard(start_dashboard) -> DashboardServer:
    return start_dashboard()


@pytest.fixture(scope="module")
def browser():
    # per module, not per session: Playwright's sync API keeps an event loop running in
    # this thread while it is started, and later tests call asyncio.run()
    if not CHROMIUM.exists():
        pytest.fail(f"{NO_CHROMIUM}; `make test` installs it")
    from playwright import sync_api
    playwright = sync_api.sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=LAUNCH_ARGS)
    except Exception:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def open_page(browser, request):
    """``open_page(**context_options)`` -> a new page; photographed and checked at teardown."""
    opened = []

    def open_(**options):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
        page = context.new_page()
        page.set_default_timeout(DEADLINE * 1000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" and "401" not in msg.text else None)
        opened.append((context, page, errors))
        return page

    yield open_
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    problems = []
    for i, (context, page, errors) in enumerate(opened):
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}{'' if i == 0 else f'-{i}'}.png"),
                            full_page=True)
        finally:
            context.close()
        problems.extend(errors)
    assert not problems, "the page reported errors:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page):
    return open_page()
