"""The producer side of the canvas without Redis: signatures, partial arguments, the
operators, freezing (ids and handles) and the wire bodies the planner builds."""

from __future__ import annotations

import pytest

from engine import Engine, GroupResult, chain, chord, group, message, signature
from engine.canvas import CanvasError, Signature, maybe_signature
from engine.canvas.plan import CHAIN, GROUP, Planner, child_id, encode

app = Engine("unit-canvas", broker="redis://127.0.0.1:1/0")


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task(queue="math")
def tsum(values):
    return sum(values)


def bodies(sig, seed="seed"):
    return [message.loads(o.body) for o in Planner(app).plan(sig, seed=seed)]


def test_signature_fields_and_local_call():
    # Given signatures made the three ways
    s = add.signature((2, 2), {}, countdown=1, queue="q")
    # Then they carry name, args, kwargs and options, and calling one runs it here
    assert (s.task, s.args, s.kwargs, s.options) == (add.name, (2, 2), {},
                                                      {"countdown": 1, "queue": "q"})
    assert add.s(2, 2)() == 4 and add.s(2)(5) == 7          # partial: given args come first
    assert add.si(2, 2)(100) == 4                           # immutable: extra args ignored
    assert signature(add.name, args=(1, 2), app=app)() == 3
    assert app.signature(add.name, (3, 4))() == 7


def test_set_clone_and_unknown_options():
    s = add.s(1).set(queue="q", countdown=2)
    assert s.options == {"queue": "q", "countdown": 2}
    c = s.clone(args=(9,), kwargs={"y": 1}, queue="other")
    assert c.args == (9,) and c.kwargs == {"y": 1} and c.options["queue"] == "other"
    assert s.args == (1,) and s.options["queue"] == "q"     # the original is untouched
    with pytest.raises(TypeError, match="unknown signature option"):
        add.s(1).set(colour="red")
    with pytest.raises(TypeError, match="unknown signature option"):
        add.signature((1, 2), bogus=True)


def test_signature_is_its_wire_map_and_rebuilds():
    s = add.s(1, 2).set(link=mul.s(3))
    raw = message.dumps(s)
    back = maybe_signature(message.loads(raw), app=app)
    assert isinstance(back, Signature) and back == s and back() == 3
    assert isinstance(maybe_signature(message.loads(message.dumps(add.s(1) | mul.s(2)))),
                      chain)
    assert set(message.loads(raw)) == {"task", "args", "kwargs", "options", "immutable"}


def test_operators():
    c = add.s(1, 1) | mul.s(2) | mul.s(3)
    assert isinstance(c, chain) and [t.task for t in c.tasks] == [add.name, mul.name, mul.name]
    assert len((c | (mul.s(4) | mul.s(5))).tasks) == 5       # chains flatten
    g = group(add.s(i, i) for i in range(3))
    assert isinstance(g | tsum.s(), chord)                   # a group followed by a task
    assert isinstance(g | g, chain)
    assert isinstance(add.s(1, 1) | g, chain)


def test_freeze_gives_ids_and_parent_links():
    c = add.s(2, 2) | mul.s(4) | mul.s(10)
    r = c.freeze()
    assert r.id == c.tasks[-1].options["task_id"]
    assert r.parent.id == c.tasks[1].options["task_id"]
    assert r.parent.parent.id == c.tasks[0].options["task_id"] and r.parent.parent.parent is None
    assert r.parent.children == [r]
    ch = chord([add.s(i, i) for i in range(3)], tsum.s())
    cr = ch.freeze()
    assert isinstance(cr.parent, GroupResult) and len(cr.parent.results) == 3
    assert cr.parent.id == ch.options["group_id"]


def test_chain_body_lists_the_remaining_steps_in_order():
    c = add.s(2, 2) | mul.s(4) | mul.s(10)
    c.freeze()
    [first] = bodies(c)
    assert first["task"] == add.name and first["args"] == [2, 2]
    assert [s["task"] for s in first["chain"]] == [mul.name, mul.name]
    assert [s["args"] for s in first["chain"]] == [[4], [10]]
    assert first["chain"][1]["options"]["task_id"] == c.tasks[2].options["task_id"]


def test_chord_members_carry_the_callback_size_and_index():
    ch = chord([add.s(i, i) for i in range(3)], tsum.s())
    ch.freeze()
    sent = bodies(ch)
    assert [b["chord"]["index"] for b in sent] == [0, 1, 2]
    assert {b["chord"]["size"] for b in sent} == {3}
    assert {b["group"] for b in sent} == {ch.options["group_id"]}
    assert sent[0]["chord"]["callback"]["task"] == tsum.name


def test_queues_come_from_options_then_task_then_default():
    outs = Planner(app).plan(group(add.s(1, 1).set(queue="x"), add.s(1, 1), tsum.s([1])),
                             seed="s")
    assert [o.queue for o in outs] == ["x", "default", "math"]


def test_partial_arguments_at_send_time():
    # the send-time arguments go first (to a chain's first step, to each group member)
    from engine.canvas.signature import _partial
    c = (add.s(1) | mul.s(2)).clone()
    _partial(c, (10,), {})
    assert c.tasks[0].args == (10, 1) and c.tasks[1].args == (2,)
    g = group(add.s(1), add.si(5, 5)).clone()
    _partial(g, (3,), {})
    assert g.tasks[0].args == (3, 1) and g.tasks[1].args == (5, 5)


def test_head_is_spliced_first_unless_immutable():
    head = message.dumps({"from": "parent"})
    [o] = Planner(app).plan(add.s(1), seed="s", head=head)
    assert message.loads(o.body)["args"] == [{"from": "parent"}, 1]
    [o] = Planner(app).plan(add.si(1, 2), seed="s", head=head)
    assert message.loads(o.body)["args"] == [1, 2]


def test_spliced_encoding_matches_plain_msgpack():
    for n_keys in (5, 14, 15, 20):
        body = {f"k{i}": i for i in range(n_keys)}
        args = list(range(40000))
        spliced = encode(dict(body), args[1:], message.dumps(args[0]))
        assert message.loads(spliced) == {**body, "args": args}


def test_derived_ids_are_deterministic():
    assert child_id("a", "next") == child_id("a", "next") != child_id("a", "link/0")
    # a raw chain without ids: each step's id follows from the one before
    raw = {"task": CHAIN, "args": [], "kwargs": {"tasks": [dict(add.s(1, 1)), dict(mul.s(2))]},
           "options": {}, "immutable": False}
    ids = [i for i, _ in Planner(app).future(raw, seed="first")]
    assert ids == ["first", child_id("first", "next")]


def test_chain_options_spread_to_its_steps():
    c = chain(add.s(1, 1), mul.s(2).set(queue="own"), mul.s(3), queue="q", countdown=5,
              link=tsum.s())
    c.freeze()
    [first] = bodies(c)
    assert first["eta"] > 0 and first["chain"][0]["options"]["queue"] == "own"
    assert first["chain"][1]["options"]["queue"] == "q"
    assert first["chain"][1]["options"]["link"][0]["task"] == tsum.name
    assert "link" not in first


def test_group_in_a_chord_header_is_refused_before_sending():
    with pytest.raises(CanvasError, match="header members"):
        chord([group(add.s(1, 1)), add.s(2, 2)], tsum.s()).freeze()
    with pytest.raises(CanvasError, match="header members"):
        chord([add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s()], tsum.s()).freeze()
    with pytest.raises(CanvasError, match="needs a body"):
        chord([add.s(1, 1)]).apply_async()


def test_unencodable_argument_names_it_and_sends_nothing():
    with pytest.raises(TypeError, match="argument 1"):
        (add.s(1, object()) | mul.s(2)).apply_async()   # no broker: nothing was sent


def test_chunks_map_and_starmap_shapes():
    g = add.chunks(zip(range(5), range(5)), 2).group()
    assert isinstance(g, group) and len(g.tasks) == 3
    assert g.tasks[0].kwargs["it"] == [[0, 0], [1, 1]]
    assert add.map([1, 2]).task == "engine.map" and add.starmap([(1, 2)]).task == "engine.starmap"
    assert app.tasks["engine.starmap"](add.s(), [[1, 2], [3, 4]]) == [3, 7]
    assert app.tasks["engine.map"](mul.s(10), [1, 2]) == [10, 20]
    assert group().task == GROUP and not group().tasks


def test_a_composition_belongs_to_its_tasks_app_not_the_current_one():
    # Given tasks of this module's app, and another app made after it (the current one)
    other = Engine("unit-canvas-other", broker="redis://127.0.0.1:2/0")
    from engine.app import current_app
    assert current_app() is other
    # Then compositions of those tasks send through their own app
    assert (add.s(1, 1) | mul.s(2)).app is app
    assert group(add.s(1, 1)).app is app and chord([add.s(1, 1)], tsum.s()).app is app
    assert add.chunks([(1, 2)], 1).app is app and add.map([1]).app is app
    assert (add.s(1, 1) | mul.s(2)).freeze().app is app
