"""The canvas survives crashes: a step killed while it runs, a worker killed just after a
step's result was written, a step delivered twice; no successor is ever sent twice. And a
10,000-member chord completes and leaves nothing behind once ``result_expires`` passes."""

from __future__ import annotations

import pytest

from engine import chain, chord, message
from engine.canvas.plan import Planner
from engine.canvas.worker import chord_keys
from tests.apps.canvas import add, counted, step, tsum
from tests.conftest import wait_for
from tests.integration.canvas_helpers import APP, capp, count  # noqa: F401
from tests.integration.reliability_helpers import kill_hard

T = 90
STEPS = [f"s{i}" for i in range(5)]


def _chain(slow: dict[str, float]):
    first, *rest = STEPS
    return chain(step.s(0, first, slow.get(first, 0)),
                 *[step.s(name, slow.get(name, 0)) for name in rest])


def _runs(app) -> dict[str, int]:
    return {name: count(app, f"runs:{name}") for name in STEPS}


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_sigkill_in_the_middle_of_a_chain_step(capp, run_worker, pool):
    # Given a chain whose third step takes long on its first run
    args = ("--pool", pool, "-c", "2", "-n", f"phoenix-{pool}")
    first = run_worker(*args, app=APP)
    r = _chain({"s2": 60}).delay()
    wait_for(lambda: capp.client.get(f"{capp.conf.key_prefix}:t:started:s2"), T,
             message="the third step to start")
    # When the worker dies while that step runs, and comes back under its name
    kill_hard(first)
    run_worker(*args, app=APP)
    # Then the chain completes with the right value; the killed step ran again, and no
    # other step ran twice (a successor sent twice would run twice)
    assert r.get(timeout=T) == 5
    assert _runs(capp) == {"s0": 1, "s1": 1, "s2": 2, "s3": 1, "s4": 1}


def test_sigkill_right_after_a_step_result_was_written(capp, run_worker):
    # Given a chain on a worker, its next step slow on its first run
    args = ("--pool", "prefork", "-c", "2", "-n", "phoenix-written")
    first = run_worker(*args, app=APP)
    r = _chain({"s2": 60}).delay()
    step1 = r.parent.parent.parent.id            # s4 <- s3 <- s2 <- s1
    # When the worker is killed the moment the second step's result exists
    wait_for(lambda: capp.client.exists(capp.backend.result_key(step1)), T, interval=0.001,
             message="the second step's result")
    kill_hard(first)
    run_worker(*args, app=APP)
    # Then the chain completes; with one kill, at most one step ran one time more
    assert r.get(timeout=T) == 5
    runs = _runs(capp)
    assert all(n >= 1 for n in runs.values()) and sum(runs.values()) <= len(STEPS) + 1, runs
    assert runs["s0"] == 1 and runs["s3"] == 1 and runs["s4"] == 1, runs


def test_a_step_delivered_twice_sends_its_successors_once(capp, run_worker):
    # Given a chain and a chord, every first message sent twice (as after a crash between
    # a step's result and its ack, when the message is delivered again)
    c = _chain({})
    r = c.freeze()
    ch = chord([add.s(i, i) for i in range(10)], counted.s(name="body"))
    cr = ch.freeze()
    messages = Planner(capp).plan(c, seed="unused") + Planner(capp).plan(ch, seed="unused")
    capp.broker.enqueue_many([(m.queue, m.body, None) for m in messages * 2])
    # When a worker runs them
    run_worker("--pool", "threads", "-c", "4", app=APP)
    # Then the first step ran twice, every later step once, and the chord's body once
    assert r.get(timeout=T) == 5
    assert _runs(capp) == {"s0": 2, "s1": 1, "s2": 1, "s3": 1, "s4": 1}
    wait_for(lambda: count(capp, "body") >= 1, T, message="the chord's body")
    assert cr.parent.get(timeout=T) == [2 * i for i in range(10)]
    assert add.delay(1, 1).get(timeout=T) == 2          # everything before it is done
    assert count(capp, "body") == 1


def test_a_crash_between_the_chord_count_and_its_body_loses_no_body(capp, run_worker):
    # Given a chord whose every member was counted, but whose last member's worker died
    # before sending the body (its message is still there, to be delivered again)
    ch = chord([add.s(i, 10) for i in range(3)], tsum.s())
    r = ch.freeze()
    members = Planner(capp).plan(ch, seed="unused")
    results_key, _ = chord_keys(capp.conf.key_prefix, r.parent.id)
    capp.client.hset(results_key, mapping={i: message.dumps(i + 10) for i in range(3)})
    capp.broker.enqueue_many([(members[2].queue, members[2].body, None)])
    # When a worker runs the redelivered member
    run_worker("--pool", "threads", "-c", "2", app=APP)
    # Then the body was sent, once, with every member's result
    assert r.get(timeout=T) == 10 + 11 + 12
    assert add.delay(1, 1).get(timeout=T) == 2
    assert not capp.client.exists(results_key)       # forgotten once the body was sent


def test_a_ten_thousand_member_chord_completes_and_its_keys_expire(capp, run_worker):
    # Given a worker whose results (and canvas bookkeeping) expire after 5 s
    expires = 5
    run_worker("--pool", "prefork", "-c", "2", app=APP,
               extra_env={"TEST_RESULT_EXPIRES": str(expires)})
    # When a chord of 10,000 members is sent
    r = chord((add.s(i, 0) for i in range(10_000)), tsum.s()).delay()
    # Then its body gets every result
    assert r.get(timeout=T) == sum(range(10_000))
    prefix = capp.conf.key_prefix
    gid = r.parent.id

    def leftovers() -> list[bytes]:
        return [k for pattern in ("result:*", "status:*", "sent:*", f"chord:{{g:{gid}}}*")
                for k in capp.client.scan_iter(f"{prefix}:{pattern}", count=5000)]
    # and every key it left has an expiry of at most result_expires
    ttls = {k: capp.client.ttl(k) for k in leftovers()}
    def bounded(ttl: int) -> bool:   # -2: gone meanwhile; -1 (no expiry) is a leak
        return ttl == -2 or 0 <= ttl <= expires
    assert ttls and all(bounded(t) for t in ttls.values()), \
        {k: t for k, t in ttls.items() if not bounded(t)}
    # and once that has passed, none is left
    wait_for(lambda: not leftovers(), T, interval=0.5, message="the chord's keys to expire")
