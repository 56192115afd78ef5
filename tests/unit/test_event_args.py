"""The ``task-received`` event's arguments (engine.events): capped repr text, made when the
batch is packed, nothing at all when events are off."""

from __future__ import annotations

from pools.base import Job

from engine.events import ARGS_LIMIT, PLAIN_REPR_BODY, EventBuffer, unpack
from engine.message import encode_message, load_job


def received(buffer: EventBuffer, job: Job) -> dict:
    buffer.received(job, "default")
    [event] = unpack({b"b": buffer.take(force=True)})
    return event


def test_the_received_event_carries_the_arguments_as_text():
    # Given a job with plain arguments, decoded from its message
    job = load_job(encode_message("a", "t.add", [20, "x"], {"y": [1, 2]}, retries=3))

    # When its received event goes through the stream's codec
    event = received(EventBuffer("s", "w1"), job)

    # Then its arguments are their repr, beside the usual fields
    assert (event["args"], event["kwargs"]) == ("[20, 'x']", "{'y': [1, 2]}")
    assert (event["type"], event["id"], event["task"], event["queue"], event["retries"]) == \
        ("task-received", "a", "t.add", "default", 3)


def test_huge_arguments_are_cut_to_the_limit():
    # Given arguments whose full repr would be megabytes
    job = Job(id="b", task="t.big", args=["y" * 3_000_000, list(range(1_000_000))],
              kwargs={f"k{i}": "z" * 5000 for i in range(1000)})

    # When its event is packed
    event = received(EventBuffer("s", "w1"), job)

    # Then each text fits the limit and still begins like the value
    assert 0 < len(event["args"]) <= ARGS_LIMIT and event["args"].startswith("['yyyy")
    assert 0 < len(event["kwargs"]) <= ARGS_LIMIT and event["kwargs"].startswith("{'k0': 'zz")


def test_a_small_message_with_a_long_repr_is_cut_too():
    # Given a message small enough for a plain repr whose text is longer than the limit
    job = load_job(encode_message("s", "t.many", [list(range(100, 600))], {"k": 1}))
    assert len(job.body) <= PLAIN_REPR_BODY and len(repr(job.args)) > ARGS_LIMIT

    # When its event is packed
    event = received(EventBuffer("s", "w1"), job)

    # Then the text is cut to the limit, and the other one is whole
    assert len(event["args"]) == ARGS_LIMIT and event["args"].startswith("[[100, 101, ")
    assert event["kwargs"] == "{'k': 1}"


class Hostile:
    def __repr__(self):
        raise RuntimeError("no")


def test_an_argument_whose_repr_raises_costs_only_its_text():
    # Given an argument that cannot be shown, in a batch with another event
    buffer = EventBuffer("s", "w1")
    buffer.received(Job(id="c", task="t.odd", args=[Hostile()]), "default")
    buffer.task("task-started", "c", "t.odd")

    # When the batch is packed
    events = unpack({b"b": buffer.take(force=True)})

    # Then the batch is whole, and the text names what could not be shown
    assert [e["type"] for e in events] == ["task-received", "task-started"]
    assert events[0]["args"].startswith("[<Hostile instance at ")


def test_with_events_off_nothing_is_kept():
    buffer = EventBuffer("s", "w1", enabled=False)
    buffer.received(Job(id="d", task="t.add", args=[1]), "default")
    assert buffer.take(force=True) is None
