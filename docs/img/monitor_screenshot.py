"""Regenerates docs/img/monitor-80x24.png: ``engine events`` at 80x24 with tasks on it.

A private redis-server, a real worker (tests.apps.basic) that has run some tasks, failed one
and is running another, the real monitor on an 80x24 pseudo-terminal read through pyte, its
screen written as an HTML page and photographed by Debian's headless chromium.

    .venv/bin/python docs/img/monitor_screenshot.py [OUT.png]
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.testing import Worker, engine_env, engine_home, private_redis  # noqa: E402
from tests.integration.pty_screen import PtyScreen  # noqa: E402

ROWS, COLUMNS = 24, 80
CHAR_W, LINE_H, PAD = 8.45, 18, 12   # DejaVu Sans Mono at 14 px
COLORS = {"default": "#d4d4d4", "black": "#1e1e1e", "red": "#f14c4c", "green": "#23d18b",
          "yellow": "#e5e510", "blue": "#3b8eea", "magenta": "#d670d6", "cyan": "#29b8db",
          "white": "#e5e5e5"}
BACKGROUND = "#1e1e1e"


def page(cells: list[list[tuple]]) -> str:
    rows = []
    for row in cells:
        spans = []
        for char, fg, bg, bold, reverse, underscore in row:
            color = COLORS.get(fg, f"#{fg}" if re.fullmatch(r"[0-9a-f]{6}", fg) else COLORS["default"])
            back = COLORS.get(bg, BACKGROUND) if bg != "default" else BACKGROUND
            if reverse:
                color, back = back, color
            style = f"color:{color};background:{back}"
            style += ";font-weight:bold" if bold else ""
            style += ";text-decoration:underline" if underscore else ""
            spans.append(f'<span style="{style}">{html.escape(char or " ")}</span>')
        rows.append("".join(spans))
    return ("<!doctype html><meta charset=utf-8><style>body{margin:0;background:%s}"
            "pre{margin:0;padding:%dpx;font:14px/%dpx 'DejaVu Sans Mono',monospace}</style>"
            "<pre>%s</pre>" % (BACKGROUND, PAD, LINE_H, "\n".join(rows)))


def shoot(cells: list[list[tuple]], out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "screen.html"
        source.write_text(page(cells))
        width, height = int(COLUMNS * CHAR_W + 2 * PAD) + 1, ROWS * LINE_H + 2 * PAD
        subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--force-device-scale-factor=2",
                        f"--window-size={width},{height}",
                        f"--screenshot={out}", source.as_uri()], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def _selected_id(screen: PtyScreen) -> str | None:
    found = re.search(r"^id (\S+)", screen.text(), re.M)
    return found.group(1) if found else None


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as home, engine_home(Path(home)), \
            private_redis(prefix="engine-shot-") as server:
        env = engine_env({"ENGINE_BROKER_URL": server.url, "ENGINE_KEY_PREFIX": "shot"},
                         root=ROOT)
        os.environ.update({"ENGINE_BROKER_URL": server.url, "ENGINE_KEY_PREFIX": "shot"})
        from tests.apps.basic import app
        worker = Worker(["-A", "tests.apps.basic", "--pool", "threads", "-c", "4", "-n",
                         "worker1@demo"], env=env, log_path=Path(home) / "worker.log", cwd=ROOT)
        screen = None
        try:
            worker.wait_ready()
            app.gather(app.tasks["tests.apps.basic.add"].delay_many(
                [(i, i) for i in range(12)]), timeout=60)
            bad = app.tasks["tests.apps.basic.fail"].delay("invoice 1042 has no customer")
            bad.get(timeout=60, propagate=False)
            app.tasks["tests.apps.basic.add"].delay(2, 3).get(timeout=60)
            app.tasks["tests.apps.basic.sleep"].delay(300)
            for i in range(5):
                app.send_task("tests.apps.basic.add", (i, i), queue="reports")
            screen = PtyScreen([sys.executable, "-m", "engine", "events", "-A",
                                "tests.apps.basic"], env, rows=ROWS, columns=COLUMNS, cwd=ROOT)
            screen.showing(r"^worker1@demo\s.*\d+%", r"^reports\s+5", r"args \[300\]",
                           message="the monitor with its worker, queue and running task")
            # the failed task selected: its exception in the details pane
            for _ in range(5):
                if "state failed" in screen.text():
                    break
                before = _selected_id(screen)
                screen.press("j")
                screen.wait(lambda s: _selected_id(s) not in (None, before), "the next task")
            screen.showing(r"state failed", r"exception tests\.apps\.basic\.CustomError",
                           message="the failed task's details")
            shoot(screen.cells(), out)
            screen.press("q")
            screen.proc.wait(60)
        finally:
            if screen is not None:
                screen.close()
            worker.kill_all()
            app.close()
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("monitor-80x24.png"))
