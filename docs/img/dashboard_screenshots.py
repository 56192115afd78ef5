"""Makes docs/img/dashboard-dead-lettered.png again: the page of a task that a real worker
ran and filed as a dead letter, in Debian's Chromium (``/usr/bin/chromium``, as the tests).

Everything it starts is its own and stopped at the end: a private redis-server, one
``engine run`` and one ``engine dashboard``. Run from the repository: ``python
docs/img/dashboard_screenshots.py`` (the ``test`` extra brings Playwright).
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.testing import (DEADLINE, EngineProcess, Worker, engine_env,  # noqa: E402
                            free_port, private_redis, wait_for)

OUT = ROOT / "docs" / "img" / "dashboard-dead-lettered.png"
CHROMIUM = "/usr/bin/chromium"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    from playwright.sync_api import expect, sync_playwright

    with private_redis(prefix="engine-shot-") as server, \
            tempfile.TemporaryDirectory(prefix="engine-shot-") as tmp:
        values = {"ENGINE_BROKER_URL": server.url, "ENGINE_KEY_PREFIX": "shot",
                  "ENGINE_HOME": tmp}
        os.environ.update(values)
        env = engine_env(values, root=ROOT)
        from tests.apps.basic import app
        worker = Worker(["-A", "tests.apps.basic", "--pool", "threads", "-c", "2",
                         "-n", "worker-1"], env=env, log_path=Path(tmp) / "worker.log",
                        cwd=ROOT)
        port = free_port()
        dashboard = EngineProcess("dashboard", ["-A", "tests.apps.basic", "--port", str(port)],
                                  env=env, log_path=Path(tmp) / "dashboard.log", cwd=ROOT)
        try:
            worker.wait_ready()
            app.tasks["tests.apps.basic.add"].delay(2, 2).get(timeout=DEADLINE)
            result = app.tasks["tests.apps.basic.reject"].delay(False)
            wait_for(lambda: app.client.xlen(app.broker.keys.dlq("default")) == 1, DEADLINE,
                     message="the dead letter")
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: answers(url + "/static/dashboard.css"), DEADLINE,
                     message="the dashboard")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True,
                    args=["--headless", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/tasks/{result.id}")
                expect(page.locator("#task-state")).to_have_text("DEAD-LETTERED",
                                                                 timeout=DEADLINE * 1000)
                expect(page.locator('#task-timeline tr[data-event="task-failed"]')).to_have_count(
                    1, timeout=DEADLINE * 1000)
                expect(page.locator("#live")).to_have_text("live", timeout=DEADLINE * 1000)
                page.screenshot(path=str(OUT), full_page=True)
                browser.close()
        finally:
            dashboard.close()
            worker.kill_all()
            app.close()
    print(OUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
