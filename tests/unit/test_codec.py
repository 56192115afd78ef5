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


# -- arguments a worker could not decode are refused at the producer (issue 14, item 8) --------
@pytest.mark.parametrize("args, kwargs, named, problem", [
    ([{(1, 2): "pair"}], {}, r"argument 0 \(dict\)", "map key of type tuple"),
    ([1, [{"ok": {(3,): 4}}]], {}, r"argument 1 \(list\)", "map key of type tuple"),
    ([{frozenset({1}): 2}], {}, r"argument 0 \(dict\)", "map key of type frozenset"),
    ([{(1, 2), (3, 4)}], {}, r"argument 0 \(set\)", "set member of type tuple"),
    ([], {"grid": {(0, 0): "x"}}, r"argument 'grid' \(dict\)", "map key of type tuple"),
])
def test_a_map_key_or_set_member_the_worker_cannot_rebuild_is_refused(args, kwargs, named,
                                                                      problem):
    # Given arguments msgpack packs but no decoder can rebuild (a tuple key comes back a list)
    # When the message is encoded / Then a TypeError names the argument and what is wrong
    with pytest.raises(TypeError, match=named) as info:
        message.encode_message("id", "tasks.echo", args, kwargs)
    assert problem in str(info.value) and "could not decode" in str(info.value)


def test_keyword_names_must_be_strings():
    with pytest.raises(TypeError, match="keyword names must be str, got 1"):
        message.encode_message("id", "tasks.echo", [], {1: "one"})


def test_tuples_and_subclasses_of_builtin_types_still_travel():
    # Given values the strict packer leaves to the lenient one: tuples (not as keys),
    # frozensets (as values), IntEnum, OrderedDict, a set subclass
    import collections
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    class Tags(set):
        pass

    args = [(1, (2, 3)), frozenset({4}), Level.HIGH, collections.OrderedDict(a=(5,)), Tags({6})]
    # When encoded and decoded / Then they arrive as their plain msgpack shapes
    body = message.decode_message(message.encode_message("id", "t", args, {"at": (7, 8)}))
    assert body["args"] == [[1, [2, 3]], {4}, 3, {"a": [5]}, {6}]
    assert body["kwargs"] == {"at": [7, 8]}


def test_map_keys_that_come_back_hashable_are_fine():
    keys = {1: "int", 2.5: "float", None: "none", b"raw": "bytes", True: "bool",
            dt.date(2026, 1, 1): "date", uuid.UUID(int=1): "uuid"}
    body = message.decode_message(message.encode_message("id", "t", [keys, {1, "a"}], {}))
    assert body["args"] == [keys, {1, "a"}]


@pytest.mark.parametrize("field", ["eta", "expires", "soft", "hard"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_times_that_are_not_finite_are_refused(field, value):
    with pytest.raises(ValueError, match="finite"):
        message.encode_message("id", "t", [], {}, **{field: value})


# -- decoding checks every field's type and range (issue 14, item 2) ---------------------------
GOOD = {"v": 1, "id": "x", "task": "t", "args": [], "kwargs": {}, "retries": 0}


@pytest.mark.parametrize("changes, reason", [
    ({"retries": 2**64 - 1}, "'retries' out of range"),
    ({"retries": 2**31}, "'retries' out of range"),
    ({"retries": -1}, "'retries' out of range"),
    ({"retries": True}, "'retries' must be int"),
    ({"retries": 1.0}, "'retries' must be int"),
    ({"eta": float("inf")}, "'eta' must be a finite number"),
    ({"eta": float("nan")}, "'eta' must be a finite number"),
    ({"expires": float("-inf")}, "'expires' must be a finite number"),
    ({"soft": float("nan")}, "'soft' must be a finite number"),
    ({"hard": "10"}, "'hard' must be a number"),
    ({"expires": True}, "'expires' must be a number"),
    ({"id": ""}, "'id' must not be empty"),
    ({"id": b"x"}, "'id' must be str"),
    ({"task": ["t"]}, "'task' must be str"),
    ({"args": {"0": 1}}, "'args' must be list"),
    ({"kwargs": [1]}, "'kwargs' must be dict"),
    ({"kwargs": {1: 2}}, "'kwargs' must have str keys"),
    ({"kwargs": {"ok": 1, b"raw": 2}}, "'kwargs' must have str keys"),
    ({"v": True}, "'v' must be int"),
])
def test_out_of_range_or_wrong_typed_fields_are_refused_with_a_reason(changes, reason):
    # Given a hand-built message with one field wrong
    raw = msgpack.packb(dict(GOOD, **changes), use_bin_type=True)
    # When a worker decodes it / Then MessageError names the field (its dead-letter reason)
    with pytest.raises(message.MessageError, match=reason):
        message.decode_message(raw)
    with pytest.raises(message.MessageError, match=reason):
        message.load_job(raw)


def test_a_tuple_keyed_map_on_the_wire_is_an_undecodable_message():
    raw = msgpack.packb(dict(GOOD, args=[{(1, 2): 3}]))
    with pytest.raises(message.MessageError, match="undecodable"):
        message.decode_message(raw)


@pytest.mark.parametrize("changes", [
    {}, {"retries": message.MAX_RETRIES}, {"eta": 1.5e9, "expires": 2e9, "soft": 1, "hard": 2.5},
    {"kwargs": {"a": 1, "b": {1: 2}}}, {"ignore_result": True, "future": [1]},
])
def test_well_formed_messages_pass_both_paths(changes):
    body = dict(GOOD, **changes)
    assert message.decode_message(msgpack.packb(body, use_bin_type=True)) == body


@pytest.mark.parametrize("when", [{"countdown": float("inf")}, {"countdown": float("nan")},
                                  {"eta": float("inf")}])
def test_retry_refuses_times_that_are_not_finite(when):
    # a retry waiting for ever would park the message in the delayed set for good
    from engine.exceptions import Retry
    from engine.task import Task
    task = Task(lambda: None, None, name="t.retrying")
    with pytest.raises(ValueError, match="finite"):
        task.retry(**when)
    with pytest.raises(Retry):
        task.retry(countdown=1.0)
