"""Issue 14 on real Redis and a real worker: what producers refuse, what workers dead-letter,
and result records that are not what a worker wrote."""

import math
import sys

import msgpack
import pytest

from engine.exceptions import TaskError
from tests.apps.basic import add, echo, flaky
from tests.conftest import wait_for

GOOD = {"v": 1, "id": "x", "task": "tests.apps.basic.add", "args": [1, 2], "kwargs": {},
        "retries": 0}


def queued(app, queue="default"):
    keys = app.broker.keys
    return app.client.xlen(keys.queue(queue)), app.client.zcard(keys.delayed(queue))


@pytest.mark.parametrize("options", [
    {"eta": math.inf}, {"eta": math.nan}, {"countdown": math.inf}, {"countdown": math.nan},
    {"countdown": -math.inf}, {"expires": math.inf}, {"expires": math.nan},
    {"time_limit": math.nan}, {"soft_time_limit": math.inf},
])
def test_times_that_are_not_finite_are_refused_and_nothing_is_sent(app, options):
    # Given a producer / When it sends with a time that is not finite
    before = queued(app)
    with pytest.raises(ValueError, match="finite"):
        add.apply_async((1, 2), **options)
    # Then nothing reached Redis (an eta of +inf would wait in the delayed set for ever)
    assert queued(app) == before


def test_a_tuple_keyed_argument_is_refused_at_delay(app):
    before = queued(app)
    with pytest.raises(TypeError, match=r"argument 0 \(dict\).*map key of type tuple"):
        echo.delay({(1, 2): "pair"})
    with pytest.raises(TypeError, match=r"argument 'value' \(set\).*set member of type tuple"):
        echo.apply_async(kwargs={"value": {(1, 2)}})
    with pytest.raises(TypeError, match=r"call 1: .*argument 0 \(dict\)"):
        echo.delay_many([({"ok": 1},), ({(3,): 4},)])
    assert queued(app) == before


def test_malformed_bodies_are_dead_letters_with_their_reason_and_the_worker_lives(
        app, run_worker):
    # Given a worker, and bodies whose fields are out of range or of the wrong type, XADDed
    # raw as a producer in another language might
    worker = run_worker("--pool", "solo")
    bodies = {
        "retries": (dict(GOOD, task="tests.apps.basic.flaky", args=["k"], retries=2**64 - 1),
                    "'retries' out of range"),
        "negative": (dict(GOOD, retries=-5), "'retries' out of range"),
        "eta": (dict(GOOD, eta=math.inf), "'eta' must be a finite number"),
        "expires": (dict(GOOD, expires=math.nan), "'expires' must be a finite number"),
        "soft": (dict(GOOD, soft="1s"), "'soft' must be a number"),
        "id": (dict(GOOD, id=7), "'id' must be str"),
        "task": (dict(GOOD, task=None), "'task' must be str"),
        "args": (dict(GOOD, args={"x": 1}), "'args' must be list"),
        "kwargs": (dict(GOOD, kwargs={1: 2}), "'kwargs' must have str keys"),
        "tuple key": (dict(GOOD, args=[{(1, 2): 3}]), "undecodable"),
    }
    stream = app.broker.keys.queue("default")
    raws = {}
    for name, (body, _) in bodies.items():
        raws[name] = msgpack.packb(body, use_bin_type=True)
        app.client.xadd(stream, {"m": raws[name]})
    # When the worker has read them, and a good task after them
    assert add.delay(2, 2).get(timeout=60) == 4
    # Then each is in the dead-letter stream with its original bytes and its reason
    dlq = app.broker.keys.dlq("default")
    entries = wait_for(lambda: len(app.client.xrange(dlq)) >= len(bodies) and
                       app.client.xrange(dlq), message="every dead letter")
    reasons = {fields[b"m"]: fields[b"reason"].decode() for _, fields in entries}
    for name, (_, reason) in bodies.items():
        assert reason in reasons[raws[name]], (name, reasons[raws[name]])
    # And the worker is alive and still serves tasks; nothing stays pending
    assert worker.proc.poll() is None
    assert flaky.delay(f"{app.conf.key_prefix}:flaky").get(timeout=60) == 3
    wait_for(lambda: app.broker.depth("default")["unacked"] == 0, message="acked")
    assert worker.proc.poll() is None


@pytest.mark.parametrize("raw", [
    b"\xc1 not msgpack",
    msgpack.packb([{(1, 2): "tuple key"}] + [""] * 9),
    msgpack.packb({"state": "SUCCESS", "value": 1}),
    msgpack.packb([["SUCCESS"], 1, "", "", "", 0.0, 0, "t", "w", 0.0]),
])
def test_a_malformed_result_record_reads_as_failure(app, raw):
    # Given a result key holding something no worker wrote
    r = add.apply_async((1, 1))   # no worker runs: the key is ours to write
    app.client.rpush(app.backend.result_key(r.id), raw)
    # When the producer reads it / Then nothing raises but get(), with a TaskError saying so
    assert r.state == "FAILURE" and r.ready() and r.failed()
    assert isinstance(r.result, TaskError) and "malformed result record" in str(r.result)
    with pytest.raises(TaskError, match="malformed result record"):
        r.get(timeout=5)
    assert isinstance(r.get(timeout=5, propagate=False), TaskError)
    assert app.gather([r], timeout=5, propagate=False)[0].args[0].startswith("malformed")
    # And a good record written over it later is read (the malformed one is not cached)
    app.client.delete(app.backend.result_key(r.id))
    app.client.rpush(app.backend.result_key(r.id),
                     b"\x9a" + msgpack.packb("SUCCESS") + msgpack.packb(2)
                     + msgpack.packb(["", "", "", 0.0, 0, "t", "w", 0.0])[1:])
    assert r.state == "SUCCESS" and r.get(timeout=5) == 2


def test_a_malformed_interim_status_reads_as_failure(app):
    r = add.apply_async((1, 1))
    app.client.set(app.backend.status_key(r.id), b"\x93\x01\x02")
    assert r.state == "FAILURE" and "malformed" in str(r.result)


def test_result_exception_modules_lets_a_producer_import_named_modules(app, tmp_path,
                                                                        monkeypatch):
    # Given a failure record naming a type in a module this producer never imported
    name = f"faraway_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("class FarError(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from engine.results import encode_record
    r = add.apply_async((1, 1))
    app.client.rpush(app.backend.result_key(r.id), encode_record(
        "FAILURE", exc_type=f"{name}.FarError", exc_message="far", task="t"))
    try:
        # Then by default it is a TaskError and the module stays unimported
        with pytest.raises(TaskError, match="FarError"):
            r.get(timeout=5)
        assert name not in sys.modules
        # And once the setting names it, get() raises the type itself
        monkeypatch.setitem(app.conf._layers["update"], "result_exception_modules", name)
        with pytest.raises(Exception, match="far") as info:
            r.get(timeout=5)
        assert type(info.value).__name__ == "FarError"
    finally:
        sys.modules.pop(name, None)
