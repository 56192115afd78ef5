"""The monitor's screen for every size: what fits, what goes first, and the selection."""

from __future__ import annotations

import time

import pytest

from engine.monitor.keys import BOTTOM, DOWN, TOP, UP, Selection
from engine.monitor.layout import Column, cut, fit
from engine.monitor.state import FleetState
from engine.monitor.view import QUEUE_COLUMNS, TASK_COLUMNS, WORKER_COLUMNS, render

NOW = time.time()
TABLES = {"worker": WORKER_COLUMNS, "queue": QUEUE_COLUMNS, "time": TASK_COLUMNS}
WORDS = {w for cols in TABLES.values() for c in cols for w in (c.name, c.short) if w}


def fleet(tasks: int = 30) -> FleetState:
    state = FleetState()
    lanes = [{"name": "default", "pool": "prefork", "concurrency": 8, "processed": 123456,
              "failed": 7, "pool_info": {}}]
    state.workers = {
        "engine-123456@a-rather-long-host-name.example.com": {
            "lanes": lanes, "active": 8, "load": 12.34, "rss": 512000, "started": NOW - 9000,
            "cpu_percent": 97.0},
        "w2": {"lanes": lanes + [{"name": "io", "pool": "gevent", "concurrency": 100,
                                  "pool_info": {"isolated": True, "pid": 42, "state": "up"}}],
               "active": 0, "load": 0.5, "rss": 10240, "started": NOW - 5}}
    state.offline = {"gone@host": NOW}
    state.queues = {"default": {"waiting": 123456, "unacked": 8, "delayed": 3, "dead": 1},
                    "a.very.long.queue.name.for.reports": {"waiting": 0, "unacked": 0,
                                                           "delayed": 0, "dead": 0}}
    for i in range(tasks):
        task_id = f"{i:08d}-f338-4ce7-afd6-da4ebbc1d9d2"
        state.on_event({"type": "task-received", "ts": NOW + i, "worker": "w2", "id": task_id,
                        "task": "reports.monthly.build_the_summary", "queue": "default"})
        if i % 3:
            state.on_event({"type": "task-failed", "ts": NOW + i + 0.5, "worker": "w2",
                            "id": task_id, "task": "reports.monthly.build_the_summary",
                            "exception": "reports.errors.TemplateMissing",
                            "message": "no template named monthly-" + "x" * 80, "runtime": 1.5})
    return state


def text(line) -> str:
    return "".join(t for t, _ in line)


@pytest.mark.parametrize("height", [8, 24, 40, 60])
def test_every_line_fits_and_headers_are_whole_at_every_size(height):
    state = fleet()
    for width in range(24, 241, 3):
        screen = render(state, Selection(), width, height, "app", NOW)
        lines = [text(line) for line in screen]
        assert len(lines) <= height
        assert all(len(line) <= width for line in lines), (width, height)
        headers = [text(line) for line in screen
                   if line and all(style == "header" for _, style in line)
                   and not text(line).startswith("─")]
        if height >= 24:
            assert len(headers) == 3, (width, lines)
        for line in headers:
            assert set(line.split()) <= WORDS, (width, line)


@pytest.mark.parametrize("columns", TABLES.values())
def test_columns_go_by_priority_and_come_back_as_the_width_grows(columns):
    rows = [[("x" * 40 if c.flex else "1234567") for c in columns]]
    previous: set[str] = set()
    for width in range(10, 300):
        fitted, shown = fit(columns, rows, width)
        names = {columns[i].name for i in shown}
        dropped = [c for c in columns if c.name not in names]
        assert all(c.priority > 0 for c in dropped)
        # whatever is dropped has a higher priority number than anything shown
        if dropped:
            assert min(c.priority for c in dropped) >= max(columns[i].priority for i in shown)
        assert previous <= names, width
        previous = names
        for f in fitted:
            assert f.header in (f.column.name, f.column.short)
            assert f.width >= len(f.header)
    assert previous == {c.name for c in columns}


def test_at_120_columns_the_worker_table_is_whole():
    state = fleet()
    lines = [text(line) for line in render(state, Selection(), 120, 40, "app", NOW)]
    header = next(line for line in lines if line.startswith("worker"))
    assert header.split() == [c.name for c in WORKER_COLUMNS]
    row = next(line for line in lines if line.startswith("engine-123456"))
    assert row.split()[-9:] == ["8", "12.34", "97%", "500.0", "MiB", "123456", "7", "2h30m",
                                "online"], row


def test_cut_values_keep_their_start_or_their_last_dotted_parts():
    assert cut("abcdef", 6) == "abcdef"
    assert cut("abcdefgh", 6) == "abcde…"
    assert cut("tests.apps.basic.sleep", 14, keep_end=True) == "…basic.sleep"
    assert cut("anything", 0) == ""
    column = Column("name", 0, flex=4)
    fitted, _ = fit([column], [["a-long-value"]], 6)
    assert (fitted[0].header, fitted[0].width) == ("name", 6)


def test_selection_follows_the_newest_until_moved_then_stays_on_its_task():
    selection = Selection()
    ids = ["c", "b", "a"]
    assert selection.selected(ids) == "c"
    selection.apply(DOWN, ids)
    assert selection.selected(ids) == "b"
    # a new task arrives on top: the selection stays on b
    ids = ["d", "c", "b", "a"]
    assert selection.selected(ids) == "b"
    selection.apply(BOTTOM, ids)
    assert selection.selected(ids) == "a"
    selection.apply(DOWN, ids)
    assert selection.selected(ids) == "a"
    selection.apply(UP, ids)
    assert selection.selected(ids) == "b"
    selection.apply(TOP, ids)
    assert selection.selected(["e", *ids]) == "e"
    # the window scrolls to keep the selection in view
    many = [str(i) for i in range(50)]
    selection.apply(BOTTOM, many)
    assert selection.window(many, 10) == 40


def test_details_follow_the_selected_task():
    state = fleet(5)
    selection = Selection()
    ids = state.task_ids()
    screens = []
    for _ in range(3):
        screens.append("\n".join(text(line) for line in render(state, selection, 100, 30,
                                                               "app", NOW)))
        selection.apply(DOWN, ids)
    for n, screen in enumerate(screens):
        assert f"id {ids[n]}" in screen
    assert "state failed" in screens[0] and "state reserved" in screens[1]
    assert "exception reports.errors.TemplateMissing: no template" in screens[0]


def test_control_characters_in_a_message_reach_the_screen_as_spaces():
    state = fleet(0)
    state.on_event({"type": "task-failed", "ts": NOW, "worker": "w\x1b[2J", "id": "x\ty",
                    "task": "t\x07", "exception": "E", "message": "line one\nline two\x1b]0;"})
    for width in (40, 80, 200):
        screen = render(state, Selection(), width, 30, "app", NOW)
        for line in screen:
            joined = text(line)
            assert len(joined) <= width
            assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in joined), joined
    assert "line one line two" in "\n".join(text(line) for line in screen)
