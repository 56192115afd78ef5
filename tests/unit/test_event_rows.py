"""A task's short life as one row of its event batch (engine.events), and the monitor's
fold of stream entries (engine.monitor.state.FleetState.on_entry)."""

from __future__ import annotations

import msgpack

from engine.events import EventBuffer, entries, unpack
from engine.message import encode_message, load_job
from engine.monitor.state import FleetState


def job(task_id: str, *args):
    return load_job(encode_message(task_id, "t.add", list(args), {}, retries=2))


def batch_of(buffer: EventBuffer) -> dict:
    return {b"b": buffer.take(force=True)}


def folded_both_ways(fields: dict) -> tuple[FleetState, int]:
    """A monitor fed the stream entry, checked against one fed each unpacked event; with
    how many events the first says it folded."""
    by_entry, by_event = FleetState(), FleetState()
    folded = by_entry.on_entry(fields)
    for event in unpack(fields, arguments=False):
        by_event.on_event(event)
    assert by_entry.counts == by_event.counts
    assert {k: dict(v) for k, v in by_entry.tasks.items()} == \
        {k: dict(v) for k, v in by_event.tasks.items()}
    assert list(by_entry.tasks) == list(by_event.tasks)   # the task list's order too
    return by_entry, folded


def test_a_task_received_started_and_succeeded_in_one_flush_is_one_row():
    # Given a task received, started and succeeded before the buffer is taken
    buffer = EventBuffer("s", "w1")
    buffer.received(job("a", 1, 2), "default")
    buffer.started("a", "t.add")
    buffer.succeeded("a", "t.add", 0.25)

    # When the batch is packed
    fields = batch_of(buffer)

    # Then it holds one flat row and no single event
    raw = msgpack.unpackb(fields[b"b"], raw=False)
    assert raw["e"] == [] and len(raw["t"]) == 1
    assert raw["t"][0][:4] == ["a", "t.add", "default", 2]
    # and readers get the three events, in order, with their fields
    events = unpack(fields)
    assert [e["type"] for e in events] == ["task-received", "task-started", "task-succeeded"]
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    received, _, succeeded = events
    assert (received["queue"], received["retries"], received["args"]) == ("default", 2, "[1, 2]")
    assert succeeded["runtime"] == 0.25
    assert {e["id"] for e in events} == {"a"} and {e["worker"] for e in events} == {"w1"}


def test_a_task_still_running_at_the_flush_goes_out_as_its_events():
    # Given a task received and started, not ended, when the buffer is taken
    buffer = EventBuffer("s", "w1")
    buffer.received(job("b"), "default")
    buffer.started("b", "t.add")
    first = unpack(batch_of(buffer))

    # Then its two events are written, not held back
    assert [e["type"] for e in first] == ["task-received", "task-started"]

    # And its end, in the next batch, is a single event
    buffer.succeeded("b", "t.add", 0.5)
    assert [e["type"] for e in unpack(batch_of(buffer))] == ["task-succeeded"]


def test_any_other_end_writes_the_row_as_events_then_the_end():
    # Given tasks that fail, retry and are revoked within one flush
    buffer = EventBuffer("s", "w1")
    for task_id in ("f", "r", "x"):
        buffer.received(job(task_id), "default")
    buffer.started("f", "t.add")
    buffer.task("task-failed", "f", "t.add", exception="ValueError", message="bad")
    buffer.started("r", "t.add")
    buffer.task("task-retried", "r", "t.add", retries=3)
    buffer.task("task-revoked", "x", "t.add", reason="revoked")

    # When read
    events = unpack(batch_of(buffer))

    # Then each task's events are all there, in order, with their own fields
    by_task = {}
    for event in events:
        by_task.setdefault(event["id"], []).append(event)
    assert [e["type"] for e in by_task["f"]] == ["task-received", "task-started", "task-failed"]
    assert by_task["f"][2]["exception"] == "ValueError"
    assert [e["type"] for e in by_task["r"]] == ["task-received", "task-started", "task-retried"]
    assert (by_task["r"][0]["retries"], by_task["r"][2]["retries"]) == (2, 3)
    assert [e["type"] for e in by_task["x"]] == ["task-received", "task-revoked"]
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_a_second_start_and_a_second_copy_keep_every_event():
    # Given a task whose process died (it starts twice) and a task received twice
    buffer = EventBuffer("s", "w1")
    buffer.received(job("d"), "default")
    buffer.started("d", "t.add")
    buffer.started("d", "t.add")
    buffer.succeeded("d", "t.add", 0.1)
    buffer.received(job("c"), "default")
    buffer.received(job("c"), "default")
    buffer.started("c", "t.add")
    buffer.succeeded("c", "t.add", 0.1)

    # When read, Then nothing is lost or merged away
    kinds = {}
    for event in unpack(batch_of(buffer)):
        kinds.setdefault(event["id"], []).append(event["type"])
    assert kinds["d"] == ["task-received", "task-started", "task-started", "task-succeeded"]
    assert kinds["c"] == ["task-received", "task-received", "task-started", "task-succeeded"]


def test_a_large_message_keeps_its_received_event_apart():
    # Given a message over the size carried in events
    buffer = EventBuffer("s", "w1")
    buffer.received(job("big", "y" * 5000), "default")
    buffer.started("big", "t.add")
    buffer.succeeded("big", "t.add", 0.1)

    # When read, Then its arguments are text made by the worker, and its events all there
    events = unpack(batch_of(buffer))
    assert [e["type"] for e in events] == ["task-received", "task-started", "task-succeeded"]
    assert events[0]["args"].startswith("['yyyy")


def test_the_monitor_folds_entries_as_it_folds_their_events():
    # Given a batch mixing rows, single events and tasks still open
    buffer = EventBuffer("s", "w1")
    for i in range(20):
        buffer.received(job(f"j{i}", i), "q")
    for i in range(15):
        buffer.started(f"j{i}", "t.add")
    for i in range(10):
        buffer.succeeded(f"j{i}", "t.add", 0.01)
    buffer.task("task-failed", "j10", "t.add", exception="KeyError", message="k")
    fields = batch_of(buffer)

    # When one monitor folds the entry and another each unpacked event,
    # Then they know the same
    by_entry, folded = folded_both_ways(fields)
    assert folded == 20 + 15 + 11
    assert by_entry.tasks["j3"]["state"] == "succeeded"
    assert by_entry.tasks["j10"]["state"] == "failed"
    assert by_entry.tasks["j12"]["state"] == "active"
    assert by_entry.tasks["j17"]["state"] == "reserved"
    # and a task's arguments become text only when asked for
    assert "args" not in by_entry.tasks["j4"]
    assert by_entry.arguments("j4") == ("[4]", "{}")


def test_entries_are_in_time_order():
    # Given a task open at the flush and one closed before it
    buffer = EventBuffer("s", "w1")
    buffer.received(job("early"), "default")
    buffer.received(job("late"), "default")
    buffer.started("late", "t.add")
    buffer.succeeded("late", "t.add", 0.1)
    buffer.started("early", "t.add")
    flat = entries(batch_of(buffer))
    # Then the flat events are in time order (the open row went out after the closed one)
    assert [ts for _, ts, _, _, _, _ in flat] == sorted(ts for _, ts, _, _, _, _ in flat)
    # and each task's in its own order
    assert [kind for kind, _, _, task_id, _, _ in flat if task_id == "early"] == [
        "task-received", "task-started"]
    assert [kind for kind, _, _, task_id, _, _ in flat if task_id == "late"] == [
        "task-received", "task-started", "task-succeeded"]


def test_a_task_still_running_is_listed_after_the_rows_of_tasks_before_it():
    # Given tasks that ended within the flush, then one that still runs at the flush
    buffer = EventBuffer("s", "w1")
    for task_id in ("a1", "a2", "a3"):
        buffer.received(job(task_id), "q")
        buffer.started(task_id, "t.add")
        buffer.succeeded(task_id, "t.add", 0.01)
    buffer.received(job("slow"), "q")
    buffer.started("slow", "t.add")

    # When the monitor folds the entry, Then the running one is the newest task listed
    by_entry, _ = folded_both_ways(batch_of(buffer))
    assert by_entry.task_ids()[0] == "slow"
    assert by_entry.tasks["slow"]["state"] == "active"


def test_a_task_with_a_row_and_single_events_folds_in_time_order():
    # Given a batch where one task has single events and a row (a second copy received
    # while the first was open) beside plain rows
    buffer = EventBuffer("s", "w1")
    buffer.received(job("dup"), "q")
    buffer.received(job("dup"), "q")
    buffer.received(job("plain"), "q")
    for task_id in ("dup", "plain"):
        buffer.started(task_id, "t.add")
        buffer.succeeded(task_id, "t.add", 0.01)
    fields = batch_of(buffer)

    # When one monitor folds the entry and another each unpacked event,
    # Then they know the same
    by_entry, _ = folded_both_ways(fields)
    assert by_entry.tasks["dup"]["state"] == "succeeded"


def test_a_batch_of_rows_alone_folds_as_its_events_do_in_the_order_they_were_received():
    # Given thirty tasks received in order and ending out of order, a third without a start
    buffer = EventBuffer("s", "w1")
    for i in range(30):
        buffer.received(job(f"r{i}", i), "default", 1_700_000_000.0 + i)
    for i in list(range(29, -1, -2)) + list(range(0, 30, 2)):
        if i % 3:
            buffer.started(f"r{i}", "t.add")
        buffer.succeeded(f"r{i}", "t.add", 0.01 * i)
    fields = batch_of(buffer)
    assert msgpack.unpackb(fields[b"b"], raw=False)["e"] == []   # rows, nothing else
    # Then the monitor's record of each is the one its three events leave, listed in the
    # order the tasks were received (newest first in the view)
    by_entry, folded = folded_both_ways(fields)
    assert folded == 30 * 2 + 20
    assert list(by_entry.tasks) == [f"r{i}" for i in range(30)]
    assert by_entry.tasks["r4"]["runtime"] == 0.04 and "started" in by_entry.tasks["r4"]
    assert "started" not in by_entry.tasks["r3"]
