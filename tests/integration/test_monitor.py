"""The live monitor (``engine events``) in a real pseudo-terminal, read through a terminal
emulator (pyte): a real redis-server, a real worker running tasks, real keys typed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from engine.monitor.view import QUEUE_COLUMNS, TASK_COLUMNS, WORKER_COLUMNS
from tests.conftest import ROOT
from tests.integration.pty_screen import PtyScreen

HEADERS = {"workers": r"^worker\s+", "queues": r"^queue\s+waiting", "tasks": r"^time\s+id\s+name\s+state"}
#: every whole name a column may show as
COLUMN_WORDS = {word for column in (*WORKER_COLUMNS, *QUEUE_COLUMNS, *TASK_COLUMNS)
                for word in (column.name, column.short) if word}


@pytest.fixture
def monitor(env):
    started: list[PtyScreen] = []

    def start(rows: int = 24, columns: int = 80) -> PtyScreen:
        # faulthandler: a view that hangs can be made to print every thread's stack
        started.append(PtyScreen([sys.executable, "-m", "engine", "events", "-A",
                                  "tests.apps.basic"], dict(env, PYTHONFAULTHANDLER="1"),
                                 rows=rows, columns=columns, cwd=ROOT))
        return started[-1]

    yield start
    for screen in started:
        screen.close()


def header_lines(screen: PtyScreen) -> list[str]:
    """The table header lines on screen (each starts with its table's first column)."""
    return [line for line in screen.lines()
            if any(re.match(p, line) for p in HEADERS.values())]


def assert_fits(screen: PtyScreen) -> None:
    lines = screen.lines()
    assert len(lines) <= screen.rows
    assert all(len(line) <= screen.columns for line in lines), screen.text()
    headers = header_lines(screen)
    assert len(headers) == 3, screen.text()
    for line in headers:
        # every header word is a whole column name or abbreviation: nothing cut mid-word
        words = line.split()
        assert words and set(words) <= COLUMN_WORDS, (line, set(words) - COLUMN_WORDS)
        assert "…" not in line and "~" not in line


def selected_row(screen: PtyScreen) -> str | None:
    rows = screen.reversed_rows()
    return screen.lines()[rows[0]] if len(rows) == 1 else None


def details_id(screen: PtyScreen) -> str | None:
    found = re.search(r"^id (\S+)", screen.text(), re.M)
    return found.group(1) if found else None


@pytest.fixture
def busy(app, run_worker):
    """A worker with tasks done, one failed, and one running for a while."""
    run_worker("--pool", "threads", "-c", "3", "-n", "mon1")
    results = app.tasks["tests.apps.basic.add"].delay_many([(i, i) for i in range(6)])
    bad = app.tasks["tests.apps.basic.fail"].delay("kaboom on screen")
    app.gather(results, timeout=60)
    bad.get(timeout=60, propagate=False)
    running = app.tasks["tests.apps.basic.sleep"].delay(120)
    for i in range(3):
        app.send_task("tests.apps.basic.add", (i, i), queue="idle")
    return {"failed": bad.id, "running": running.id, "done": [r.id for r in results]}


def test_80x24_fits_moves_through_tasks_and_quits_with_q(busy, monitor):
    # Given the monitor on an 80x24 terminal with tasks on it
    screen = monitor(24, 80)
    screen.showing(r"^mon1\s", r"online", r"^idle\s+3\b", r"\bactive 1\b",
                   message="the worker, the queue and the running task")
    # Then every table fits with its headers whole, and the status of the worker is shown
    assert_fits(screen)
    assert re.search(r"^worker\s.*\bactive\b.*\bstatus$", screen.text(), re.M), screen.text()
    # And the newest task (the running one) is selected, its details below
    screen.wait(lambda s: details_id(s) == busy["running"], "the running task's details")
    # with its arguments (from its received event, or asked of the worker)
    screen.showing(r"\bstate active\b", r"^args \[120\]\s+kwargs \{\}",
                   message="the running task's arguments")
    first = screen.wait(selected_row, "one selected row")
    assert re.search(r"basic\.sleep\s+active\s", first), first

    # When j moves the selection down, the details follow: the task after it
    screen.press("j")
    screen.wait(lambda s: details_id(s) not in (None, busy["running"]), "the next task")
    second = details_id(screen)
    row = screen.wait(selected_row, "one selected row")
    assert row != first and second[:6] in row, (row, second)
    # And the arrow keys move it as well, down and back up
    screen.press("down")
    screen.wait(lambda s: details_id(s) not in (None, busy["running"], second), "a third task")
    screen.press("up")
    screen.wait(lambda s: details_id(s) == second, "the second task again")
    # k goes back to the first
    screen.press("k")
    screen.wait(lambda s: details_id(s) == busy["running"], "the first task again")
    # Down to the failure: its exception and message are in the details
    for _ in range(1 + len(busy["done"])):
        if details_id(screen) == busy["failed"]:
            break
        before = details_id(screen)
        screen.press("j")
        screen.wait(lambda s: details_id(s) != before, "the selection to move")
    screen.showing(r"state failed", r"exception tests\.apps\.basic\.CustomError: kaboom on",
                   message="the failed task's details")
    assert_fits(screen)

    # When q is typed, the monitor exits 0, the terminal as it was
    assert not screen.restored()
    screen.press("q")
    assert screen.proc.wait(60) == 0
    screen.wait(PtyScreen.restored, "the terminal restored")


def test_120x40_shows_every_worker_column_whole_and_esc_quits(busy, monitor):
    # Given the monitor on a 120x40 terminal
    screen = monitor(40, 120)
    text = screen.showing(r"^mon1\s.*\d+% .*MiB.*online$", r"^idle\s+3\s+0\s+0\s+0$",
                          message="the worker row with its CPU")
    assert_fits(screen)
    # Then rss, load and status are shown whole, as is every worker column
    header = next(line for line in header_lines(screen) if line.startswith("worker"))
    assert header.split() == [c.name for c in WORKER_COLUMNS], header
    row = next(line for line in text.splitlines() if line.startswith("mon1"))
    assert re.search(r"\s\d+\.\d\d\s+\d+%\s+\d+\.\d MiB\s+\d+\s+\d+\s+\S+\s+online$", row), row
    # And the task list shows the failure's exception in its own column
    screen.showing(r"failed\s+mon1\s+\S+\s+0\s+default\s+CustomError: kaboom",
                   message="the exception column")
    # When the terminal shrinks to 80x24, the screen is laid out again for it
    screen.resize(24, 80)
    screen.wait(lambda s: re.search(r"^worker .*\bconc\b.*\bstatus$", s.text(), re.M)
                and not any(line.startswith("time") and "exception" in line
                            for line in s.lines()), "the 80-column layout")
    assert_fits(screen)
    # When Esc is typed, the monitor exits 0, the terminal as it was
    screen.press("esc")
    assert screen.proc.wait(60) == 0
    screen.wait(PtyScreen.restored, "the terminal restored")


def test_monitor_counts_and_follows_workers(app, run_worker, monitor):
    # Given a worker and the monitor
    worker = run_worker("--pool", "threads", "-c", "3", "-n", "mon2")
    screen = monitor(30, 100)
    screen.showing(r"^mon2\s+threads\s+3\s", message="the worker row")
    # When tasks succeed and one fails, the counters say so
    results = app.tasks["tests.apps.basic.add"].delay_many([(i, i) for i in range(20)])
    app.tasks["tests.apps.basic.fail"].delay("counted")
    app.gather(results, timeout=60)
    screen.showing(r"succeeded 20\b", r"failed 1\b", r"[\d.]+ tasks/s",
                   message="the counters")
    assert_fits(screen)
    # When the worker stops, the monitor says so
    assert worker.stop() == 0
    screen.showing(r"^mon2\s.*offline$", message="the worker offline")
    # And Ctrl-C leaves it cleanly
    screen.proc.send_signal(signal.SIGINT)
    assert exit_code(screen, 60) == 0


def exit_code(screen: PtyScreen, timeout: float) -> int:
    """The view's exit code; if it has not ended within ``timeout``, the failure shows where
    each of its threads was (faulthandler's dump on SIGABRT, read off the terminal)."""
    try:
        return screen.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        screen.proc.send_signal(signal.SIGABRT)
        try:
            screen.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        screen._thread.join(10)   # the reader ends with the terminal, its last bytes read
        tail = bytes(screen.raw[-6000:]).decode("utf-8", "replace")
        pytest.fail(f"the view did not end within {timeout} s of SIGINT; its threads:\n{tail}")


def test_live_view_needs_a_terminal(engine):
    done = engine("events", "-A", "tests.apps.basic")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "engine events: error: the live view needs a terminal (--dump prints events as "
        "JSON lines)"]


@pytest.mark.slow   # the client rides out a few seconds of outage before it reports one
def test_a_lost_broker_is_shown_and_the_monitor_carries_on(env, tmp_path):
    # Given the monitor on a Redis server of this test's own
    from engine.testing import RedisServer
    server = RedisServer(tmp_path / "redis", aof=False)
    (tmp_path / "redis").mkdir()
    server.start()
    screen = None
    try:
        screen = PtyScreen([sys.executable, "-m", "engine", "events", "-A", "tests.apps.basic"],
                           dict(env, ENGINE_BROKER_URL=server.url), rows=24, columns=80,
                           cwd=ROOT)
        screen.showing(r"no live workers", message="the monitor")
        # When the server goes away, the top line says so and the view stays up
        server.stop()
        screen.showing(r"^ engine events .*Redis unavailable", message="the lost broker")
        assert_fits(screen)
        # When it is back, the error goes
        server.start()
        screen.wait(lambda s: "Redis unavailable" not in s.text(), "the broker back")
        # And q quits cleanly while the broker is gone again (the keys never wait on Redis)
        server.stop()
        screen.press("q")
        assert screen.proc.wait(60) == 0
    finally:
        if screen is not None:
            screen.close()
        server.stop()


def test_ctrl_c_leaves_even_when_started_with_sigint_ignored(env):
    # Given the view started as a shell without job control starts a background job:
    # SIGINT ignored, which exec keeps (and Python would keep)
    ignoring = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, '-m', 'engine', 'events', '-A', "
                "'tests.apps.basic'])")
    screen = PtyScreen([sys.executable, "-c", ignoring], dict(env, PYTHONFAULTHANDLER="1"),
                       rows=24, columns=80, cwd=ROOT)
    try:
        screen.showing(r"tasks/s", message="the view")
        # When Ctrl-C comes, Then it leaves cleanly all the same
        screen.proc.send_signal(signal.SIGINT)
        assert exit_code(screen, 60) == 0
    finally:
        screen.close()
