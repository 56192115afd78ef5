"""Canvas end to end on real workers: chains, groups, chords, chunks/map/starmap, nesting,
callbacks, failures, GroupResult save/restore, every pool and lanes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import AsyncResult, GroupResult, chain, chord, group, message
from engine.exceptions import ChordError
from tests.apps.canvas import (Boom, add, collect, counted, echo, fail, hop, late, mul, record,
                               step, tsum)
from tests.conftest import ROOT, wait_for
from tests.integration.canvas_helpers import APP, capp, count, recorded  # noqa: F401

T = 60


@pytest.fixture
def worker(capp, run_worker):
    return run_worker("--pool", "threads", "-c", "4", app=APP)


def test_chain_passes_each_result_on(worker, capp):
    # When a chain of three steps is sent
    r = (add.s(2, 2) | mul.s(4) | mul.s(10)).delay()
    # Then each result was the next one's first argument, and the handles link up
    assert r.get(timeout=T) == 160
    assert r.parent.get(timeout=T) == 16 and r.parent.parent.get(timeout=T) == 4
    # and a handle rebuilt from an id knows what its task sent
    first = AsyncResult(r.parent.parent.id, capp)
    assert [c.id for c in first.children] == [r.parent.id]
    assert chain(add.s(1, 2), mul.s(3)).apply_async().get(timeout=T) == 9


def test_immutable_step_ignores_the_parent_result(worker):
    assert (add.s(1, 1) | add.si(10, 10) | collect.s("x")).delay().get(timeout=T) == [20, "x"]


def test_group_results_come_in_member_order(worker, capp):
    # Given members that finish in the reverse of their order
    g = group(late.s(i, 0.05 * (4 - i)) for i in range(5)).delay()
    # Then the results are in member order
    assert g.get(timeout=T) == [0, 1, 2, 3, 4]
    assert g.ready() and g.successful() and not g.failed() and g.completed_count() == 5


def test_chord_body_gets_the_header_results_once(worker, capp):
    r = chord((add.s(i, i) for i in range(100)), tsum.s()).delay()
    assert r.get(timeout=T) == 9900
    assert r.parent.get(timeout=T) == [2 * i for i in range(100)]
    # a group followed by a task is a chord; its callback ran exactly once
    r = (group(add.s(i, 1) for i in range(10)) | counted.s(name="cb")).delay()
    wait_for(lambda: count(capp, "cb") >= 1, T, message="the callback to run")
    assert echo.delay("after").get(timeout=T) == "after"   # the worker went on past it
    assert count(capp, "cb") == 1


def test_chunks_map_and_starmap(worker):
    assert add.chunks(zip(range(10), range(10)), 4).delay().get(timeout=T) == \
        [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert echo.map([1, "a", None]).delay().get(timeout=T) == [1, "a", None]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=T) == [3, 7]


def test_nested_chain_with_a_group_then_a_task_and_a_group_of_chains(worker):
    # a chain containing a group followed by a task: the group is the header of a chord
    r = (add.s(1, 1) | group(mul.s(2), mul.s(3), mul.s(4)) | tsum.s() | mul.s(10)).delay()
    assert r.get(timeout=T) == (4 + 6 + 8) * 10
    # a group of chains: each member's result is its chain's last
    g = group(add.s(1, 1) | mul.s(2), add.s(2, 2) | mul.s(3) | mul.s(2)).delay()
    assert g.get(timeout=T) == [4, 24]
    # a chord whose members are chains
    r = chord([add.s(1, 1) | mul.s(10), add.s(2, 2) | mul.s(10)], tsum.s()).delay()
    assert r.get(timeout=T) == 60
    # a chain ending in a group hands back the group's handle
    g = (add.s(1, 1) | group(mul.s(2), mul.s(5))).delay()
    assert isinstance(g, GroupResult) and g.get(timeout=T) == [4, 10]


def test_a_failed_chord_member_fails_the_chord_and_its_body_never_runs(worker, capp):
    # Given a chord with two failing members, an errback on the chord and a counting body
    header = [add.s(1, 1), fail.s("a"), add.s(2, 2), fail.s("b")]
    r = chord(header, counted.s(name="body")).apply_async(link_error=record.s(name="cerr"))
    # Then its result is FAILURE with ChordError naming a failed member
    with pytest.raises(ChordError) as info:
        r.get(timeout=T)
    failed_ids = {m.id for m in r.parent.results[1::2]}
    assert any(i in str(info.value) for i in failed_ids)
    assert r.state == "FAILURE" and r.parent.failed() and not r.parent.successful()
    # and its errback ran once, given the named member's id first
    wait_for(lambda: recorded(capp, "cerr"), T, message="the chord's errback")
    assert echo.delay("after").get(timeout=T) == "after"
    [[args, _]] = recorded(capp, "cerr")
    assert args[0] in failed_ids and args[0] in str(info.value)
    # and the body never ran (counted in Redis), while the other members did
    assert count(capp, "body") == 0
    assert r.parent.results[0].get(timeout=T) == 2


def test_chain_failure_stops_it_and_marks_its_handle(worker, capp):
    # Given a chain whose second step fails, with errbacks on that step and on the chain
    bad = fail.s().on_error(record.s(name="step-err"))
    r = (step.s(0, "c0") | bad | step.s("c2") | step.s("c3")).apply_async(
        link_error=record.s(name="chain-err"))
    # Then its handle is FAILURE with the failing step's exception; later steps never run
    with pytest.raises(Boom, match=r"failed with \[1\]"):
        r.get(timeout=T)
    assert r.state == "FAILURE" and r.parent.state == "FAILURE"
    failed_id = r.parent.parent.id
    wait_for(lambda: recorded(capp, "step-err") and recorded(capp, "chain-err"), T,
             message="both errbacks")
    assert recorded(capp, "step-err") == [[[failed_id], {}]]
    assert recorded(capp, "chain-err") == [[[failed_id], {}]]
    assert count(capp, "runs:c0") == 1
    assert count(capp, "runs:c2") == 0 and count(capp, "runs:c3") == 0


def test_link_and_link_error_arguments(worker, capp):
    r = add.apply_async((2, 2), link=[record.s("x", name="ok"), record.si(name="ok-si")],
                        link_error=record.s(name="never"))
    assert r.get(timeout=T) == 4
    wait_for(lambda: recorded(capp, "ok") and recorded(capp, "ok-si"), T, message="links")
    assert recorded(capp, "ok") == [[[4, "x"], {}]]          # the result first
    assert recorded(capp, "ok-si") == [[[], {}]]              # immutable: nothing added
    f = fail.apply_async(("z",), link_error=record.s("extra", name="err"), link=record.s(name="no"))
    with pytest.raises(Boom):
        f.get(timeout=T)
    wait_for(lambda: recorded(capp, "err"), T, message="the errback")
    assert recorded(capp, "err") == [[[f.id, "extra"], {}]]  # the failed task's id first
    assert echo.delay(1).get(timeout=T) == 1
    assert recorded(capp, "never") == [] and recorded(capp, "no") == []
    assert [c.id for c in AsyncResult(r.id, capp).children] == [
        c.id for c in r.app.AsyncResult(r.id).children]


def test_group_result_save_and_restore_in_another_process(worker, capp, env):
    g = group(add.s(i, 1) for i in range(5)).delay()
    g.save()
    assert GroupResult.restore("no-such-group", app=capp) is None
    code = ("from tests.apps.canvas import app; from engine import GroupResult; "
            f"g = GroupResult.restore({g.id!r}, app=app); "
            "print(g.get(timeout=60), g.completed_count(), len(g.results))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[1, 2, 3, 4, 5] 5 5"
    restored = GroupResult.restore(g.id, app=capp)
    assert [r.id for r in restored.results] == [r.id for r in g.results]


def test_a_body_whose_canvas_cannot_go_on_is_dead_lettered(worker, capp):
    # Given a step, sent raw, whose chain holds something that is not a signature
    body = {"v": 1, "id": "bad-chain", "task": add.name, "args": [1, 2], "kwargs": {},
            "retries": 0, "chain": [42]}
    capp.client.xadd(capp.broker.keys.queue("default"), {"m": message.dumps(body)})
    # Then the step ran and its result is stored, its body is filed with the reason, and the
    # worker goes on
    assert AsyncResult("bad-chain", capp).get(timeout=T) == 3
    wait_for(lambda: capp.client.xlen(capp.broker.keys.dlq("default")), T,
             message="the dead letter")
    [(_, fields)] = capp.client.xrange(capp.broker.keys.dlq("default"))
    assert fields[b"reason"].startswith(b"canvas: ") and b"signature" in fields[b"reason"]
    assert message.loads(fields[b"m"])["id"] == "bad-chain"
    assert (add.s(1, 1) | mul.s(3)).delay().get(timeout=T) == 6


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent", "solo"])
def test_canvas_on_every_pool(capp, run_worker, pool):
    run_worker("--pool", pool, "-c", "2", app=APP)
    assert (add.s(2, 2) | mul.s(4) | mul.s(10)).delay().get(timeout=T) == 160
    assert chord((add.s(i, i) for i in range(20)), tsum.s()).delay().get(timeout=T) == 380
    assert group(echo.s(i) for i in range(10)).delay().get(timeout=T) == list(range(10))


def test_chain_across_lanes(capp, run_worker):
    # Given one worker with two lanes on two pools, and a chain whose steps alternate queues
    w = run_worker("--lane", "a=prefork:2", "--lane", "b=threads:4", app=APP)
    steps = [hop.s([]).set(queue="a")] + [hop.s().set(queue=q) for q in "bab"]
    trail = chain(*steps).delay().get(timeout=T)
    # Then each step ran on its own queue's lane: a in prefork children, b in the worker
    # (prefork children do not see request.queue: only the process tells them apart)
    children = {p.pid for p in w.children()}
    assert [pid in children for _, pid in trail] == [True, False, True, False]
    assert [pid == w.pid for _, pid in trail] == [False, True, False, True]
    assert chord([add.s(1, 1).set(queue="a"), add.s(2, 2).set(queue="b")],
                 tsum.s().set(queue="a")).delay().get(timeout=T) == 6
