import datetime as dt
import decimal
import uuid

import msgpack
import pytest

from engine import message


@pytest.mark.parametrize("value", [
    None, True, 3, -7, 2.5, "text", b"\x00bytes", [1, [2, 3]], {"a": {"b": 1}},
    dt.datetime(2026, 11, 25, 14, 0, 1, 123456, tzinfo=dt.timezone.utc),
    dt.datetime(2026, 11, 25, 14, 0, 1),
    dt.date(2026, 11, 25),
    dt.timedelta(seconds=90.5),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("12.50"),
    {1, 2, 3},
])
def test_round_trip_keeps_value_and_type(value):
    # Given a value of a supported type / When it is encoded and decoded
    back = message.loads(message.dumps(value))
    # Then the same value of the same type comes back
    assert back == value
    assert type(back) is type(value)


def test_frozenset_comes_back_as_set():
    assert message.loads(message.dumps(frozenset({1}))) == {1}


def test_tuple_comes_back_as_list():
    assert message.loads(message.dumps((1, 2))) == [1, 2]


def test_unserialisable_argument_is_named():
    # Given an argument msgpack cannot carry
    class Thing:
        pass
    # When the message is encoded / Then a TypeError names the argument and its type
    with pytest.raises(TypeError, match=r"argument 1 \(Thing\)"):
        message.encode_message("id", "tasks.add", [1, Thing()], {})
    with pytest.raises(TypeError, match=r"argument 'cb' \(function\)"):
        message.encode_message("id", "tasks.add", [], {"cb": lambda: None})


def test_message_body_follows_the_wire_protocol():
    raw = message.encode_message("abc", "tasks.add", (2, 3), {"k": 1}, eta=10.0, expires=20.0,
                                 soft=1.0, hard=2.0, ignore_result=True)
    body = msgpack.unpackb(raw)
    assert body == {"v": 1, "id": "abc", "task": "tasks.add", "args": [2, 3],
                    "kwargs": {"k": 1}, "retries": 0, "eta": 10.0, "expires": 20.0,
                    "soft": 1.0, "hard": 2.0, "ignore_result": True}


def test_decode_accepts_hand_built_message_and_ignores_unknown_keys():
    raw = msgpack.packb({"v": 1, "id": "x", "task": "t", "args": [], "kwargs": {},
                         "retries": 0, "future": "ignored"})
    job = message.load_job(raw, "default")
    assert (job.id, job.task, job.args, job.kwargs, job.queue) == ("x", "t", [], {}, "default")


@pytest.mark.parametrize("raw, reason", [
    (b"\xc1\xc1garbage", "undecodable"),
    (msgpack.packb([1, 2]), "not a map"),
    (msgpack.packb({"v": 1, "id": "x", "task": "t", "args": [], "kwargs": {}}), "retries"),
    (msgpack.packb({"v": 1, "id": 5, "task": "t", "args": [], "kwargs": {}, "retries": 0}),
     "'id' must be str"),
    (msgpack.packb({"v": 2, "id": "x", "task": "t", "args": [], "kwargs": {}, "retries": 0}),
     "version"),
    (msgpack.packb({"v": 1, "id": "x", "task": "t", "args": [], "kwargs": {}, "retries": 0,
                    "eta": "soon"}), "'eta' must be a number"),
])
def test_bad_messages_are_refused_with_a_reason(raw, reason):
    with pytest.raises(message.MessageError, match=reason):
        message.decode_message(raw)


def test_reencode_changes_only_the_given_keys():
    raw = message.encode_message("abc", "t", [1], {}, eta=5.0)
    again = message.loads(message.reencode(raw, retries=2, eta=None))
    assert again["retries"] == 2 and "eta" not in again and again["args"] == [1]
