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


class RowByRow(FleetState):
    """The monitor without its shortcut: every row of a batch folds into a record."""

    def _cut(self, ids: list) -> int:
        return 0


def folded_with_and_without_shortcut(fields: dict, *, max_tasks: int,
                                     before: tuple[dict, ...] = ()) -> tuple[FleetState, int]:
    """A monitor that keeps ``max_tasks`` fed ``before`` then ``fields``, checked against
    one that folds every row; with how many events the first says it folded."""
    quick, slow = FleetState(max_tasks=max_tasks), RowByRow(max_tasks=max_tasks)
    for earlier in before:
        quick.on_entry(earlier)
        slow.on_entry(earlier)
    folded = quick.on_entry(fields)
    assert folded == slow.on_entry(fields)
    assert quick.counts == slow.counts
    assert list(quick.finished) == list(slow.finished)
    assert quick.last_event == slow.last_event
    assert list(quick.tasks.items()) == list(slow.tasks.items())   # records and order
    return quick, folded


def rows_of(ids, *, start: float) -> dict:
    buffer = EventBuffer("s", "w1")
    for n, task_id in enumerate(ids):
        buffer.received(job(task_id, n), "default", start + n)
    for n, task_id in enumerate(ids):
        if n % 2:
            buffer.started(task_id, "t.add")
        buffer.succeeded(task_id, "t.add", 0.01)
    return batch_of(buffer)


def test_a_batch_of_more_rows_than_tasks_kept_leaves_what_folding_each_row_leaves():
    # Given a monitor that keeps five tasks and knows four already (one of them, "k2",
    # comes again in the batch: a redelivery)
    known = rows_of([f"k{i}" for i in range(4)], start=1_700_000_000.0)
    # When a batch of twelve rows arrives (more than it keeps, most of them new)
    ids = [f"n{i}" for i in range(6)] + ["k2"] + [f"n{i}" for i in range(6, 11)]
    quick, folded = folded_with_and_without_shortcut(
        rows_of(ids, start=1_700_000_100.0), max_tasks=5, before=(known,))
    # Then it counts every event and keeps the five received last, as row by row it does
    assert folded == 12 * 2 + 6
    assert list(quick.tasks) == ["n6", "n7", "n8", "n9", "n10"]
    assert quick.counts["task-succeeded"] == 16 and len(quick.finished) == 16


def test_a_batch_with_a_task_twice_folds_row_by_row():
    # Given a batch beyond the tasks kept with one task twice (two copies, two rows), its
    # second row among those kept: it updates the first row's record, kept too
    buffer = EventBuffer("s", "w1")
    for n, task_id in enumerate([f"d{i}" for i in range(8)] + ["d6"]):
        buffer.received(job(task_id, n), "default", 1_700_000_000.0 + n)
        buffer.succeeded(task_id, "t.add", 0.01)
    # Then the monitor knows what folding each row leaves
    quick, folded = folded_with_and_without_shortcut(batch_of(buffer), max_tasks=3)
    assert folded == 9 * 2 and list(quick.tasks) == ["d5", "d6", "d7"]


def test_a_batch_of_mostly_known_tasks_folds_row_by_row():
    # Given a monitor that knows ten tasks and keeps ten, then a batch of twelve rows of
    # which only three are new: most records it holds stay
    known = rows_of([f"m{i}" for i in range(10)], start=1_700_000_000.0)
    ids = [f"m{i}" for i in range(9)] + ["x0", "x1", "x2"]
    quick, _ = folded_with_and_without_shortcut(rows_of(ids, start=1_700_000_100.0),
                                                max_tasks=10, before=(known,))
    assert "m3" in quick.tasks and "x2" in quick.tasks


def test_a_batch_of_rows_and_tasks_still_running_leaves_what_folding_each_row_leaves():
    # Given a monitor that keeps four tasks and knows two; then a batch of twelve tasks
    # received, two of them (the sixth and the tenth) still running when it was taken:
    # their events go out singly, between the rows
    known = rows_of(["k0", "k1"], start=1_700_000_000.0)
    earlier = EventBuffer("s", "w1")      # and two more, still running then
    for task_id in ("r0", "r1"):
        earlier.received(job(task_id), "default", 1_700_000_050.0)
        earlier.started(task_id, "t.add")
    running = batch_of(earlier)
    buffer = EventBuffer("s", "w1")
    for task_id in ("r0", "r1"):        # whose ends come singly in the batch
        buffer.succeeded(task_id, "t.add", 0.5)
    ids = [f"b{i}" for i in range(12)]
    for n, task_id in enumerate(ids):
        buffer.received(job(task_id, n), "default", 1_700_000_100.0 + n)
    for n, task_id in enumerate(ids):
        buffer.started(task_id, "t.add")
        if n not in (5, 9):
            buffer.succeeded(task_id, "t.add", 0.01)
    fields = batch_of(buffer)
    assert len(msgpack.unpackb(fields[b"b"], raw=False)["e"]) == 6
    # Then it knows what folding every row and event in order leaves: the last four made
    # (each single event is stamped now, after every row: the ends of "r0" and "r1" and the
    # starts of "b5" and "b9" make the records last)
    quick, folded = folded_with_and_without_shortcut(fields, max_tasks=4,
                                                     before=(known, running))
    assert folded == 10 * 3 + 6
    assert list(quick.tasks) == ["r0", "r1", "b5", "b9"]
    assert quick.tasks["b9"]["state"] == quick.tasks["b5"]["state"] == "active"


def test_a_known_task_between_the_rows_is_no_new_record():
    # Given a monitor that keeps six tasks and knows "k0"; a batch of ten rows with a
    # second copy of "k0" received between the fifth and the sixth (still running): it
    # updates the record known, which the rows after it then push out
    known = rows_of(["k0"], start=1_700_000_000.0)
    buffer = EventBuffer("s", "w1")
    for n in range(10):
        if n == 5:
            buffer.received(job("k0"), "default", 1_700_000_104.5)
        buffer.received(job(f"b{n}", n), "default", 1_700_000_100.0 + n)
        buffer.succeeded(f"b{n}", "t.add", 0.01)
    quick, _ = folded_with_and_without_shortcut(batch_of(buffer), max_tasks=6,
                                                before=(known,))
    # Then the six kept are the last six rows' tasks
    assert list(quick.tasks) == [f"b{n}" for n in range(4, 10)]


def test_a_task_on_both_sides_of_the_cut_folds_row_by_row():
    # Given a monitor that keeps three tasks and a batch of six rows in which "x" comes
    # twice: its second copy finds the first one's record still kept, and updates it
    buffer = EventBuffer("s", "w1")
    for n, task_id in enumerate(["a", "x", "b", "c", "x", "d"]):
        buffer.received(job(task_id, n), "default", 1_700_000_000.0 + n)
        buffer.succeeded(task_id, "t.add", 0.01)
    quick, _ = folded_with_and_without_shortcut(batch_of(buffer), max_tasks=3)
    # Then the rows that come after it push that record out, as row by row they do
    assert list(quick.tasks) == ["b", "c", "d"]


def test_ends_before_the_cut_are_counted_in_the_order_they_came():
    # Given a batch (made by hand: single events stamped when a test wants) of eight rows
    # with the ends of two tasks received in an earlier batch between them
    earlier = EventBuffer("s", "w1")
    for task_id in ("o1", "o2"):
        earlier.received(job(task_id), "default", 1_700_000_000.0)
    rows = [[f"t{n}", "t.add", "default", 0, None, 1_700_000_100.0 + n, None,
             1_700_000_100.5 + n, 0.01] for n in range(8)]
    single = [["task-succeeded", 1_700_000_101.2, "o1", "t.add", {"runtime": 0.1}],
              ["task-failed", 1_700_000_102.7, "o2", "t.add", {"exception": "E"}],
              ["worker-heartbeat", 1_700_000_103.1, None, None, None]]
    fields = {b"b": msgpack.packb({"w": "w1", "e": single, "t": rows}, use_bin_type=True)}
    # Then a monitor that keeps three knows what folding each row and event in order
    # leaves, its finish times in that order too (a row's end with its receipt)
    quick, folded = folded_with_and_without_shortcut(fields, max_tasks=3,
                                                     before=(batch_of(earlier),))
    assert folded == 8 * 2 + 3
    assert list(quick.tasks) == ["t5", "t6", "t7"]
    assert list(quick.finished)[:4] == [1_700_000_100.5, 1_700_000_101.5, 1_700_000_101.2,
                                        1_700_000_102.5]
