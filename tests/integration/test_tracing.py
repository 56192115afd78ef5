"""Tracing (ENGINE_TRACING=1): a producer span 'send <task>' and a worker span 'run <task>',
its child through the body's 'tp'; nothing of OpenTelemetry imported when it is off."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine import message
from tests.conftest import ROOT, wait_for

PRODUCER = """
import json, sys
import tests.apps.traced
from tests.apps.basic import add, fail
ok, bad = add.delay(2, 3), fail.delay("traced boom")
print(json.dumps({"ok": ok.id, "bad": bad.id, "value": ok.get(timeout=60)}))
try:
    bad.get(timeout=60)
except Exception as exc:
    print(json.dumps({"failed": str(exc)}))
"""


def spans(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_send_and_run_spans_are_linked_by_the_traceparent(env, run_worker, tmp_path, pool):
    path = tmp_path / "spans.jsonl"
    traced = {"ENGINE_TRACING": "1", "ENGINE_TEST_SPANS": str(path)}
    run_worker("--pool", pool, "-c", "1", app="tests.apps.traced", extra_env=traced)
    done = subprocess.run([sys.executable, "-c", PRODUCER], env=dict(env, **traced), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = [json.loads(line) for line in done.stdout.splitlines()]
    assert first["value"] == 5 and "traced boom" in second["failed"]
    ids = {"ok": first["ok"], "bad": first["bad"]}
    found = wait_for(lambda: (lambda s: s if sum(x["name"].startswith("run ") for x in s) == 2
                              else None)(spans(path)), message="both run spans")
    for key, task, status in (("ok", "tests.apps.basic.add", "UNSET"),
                              ("bad", "tests.apps.basic.fail", "ERROR")):
        of = [s for s in found if s["attributes"].get("messaging.message.id") == ids[key]]
        (send,) = [s for s in of if s["name"] == f"send {task}"]
        (run,) = [s for s in of if s["name"] == f"run {task}"]
        assert send["kind"] == "PRODUCER" and run["kind"] == "CONSUMER"
        assert run["trace_id"] == send["trace_id"] and run["parent"] == send["span_id"]
        assert send["attributes"]["messaging.destination.name"] == "default"
        assert send["attributes"]["messaging.system"] == "engine"
        assert run["attributes"]["messaging.operation.type"] == "process"
        assert run["status"] == status
        assert run["pid"] != send["pid"]


def test_the_body_carries_tp_only_when_tracing_is_on(env, tmp_path):
    script = ("import sys, tests.apps.traced\nfrom tests.apps.basic import add, app\n"
              "add.apply_async((1, 1), queue='tp-probe')\n"
              "[(_, [(_, f)])] = app.client.xread({app.broker.keys.queue('tp-probe'): 0})\n"
              "sys.stdout.buffer.write(f[b'm'])\n")
    bodies = {}
    for flag in ("1", ""):
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                              env=dict(env, ENGINE_TRACING=flag,
                                       ENGINE_TEST_SPANS=str(tmp_path / "s.jsonl"),
                                       ENGINE_KEY_PREFIX=env["ENGINE_KEY_PREFIX"] + flag),
                              timeout=120)
        assert done.returncode == 0, done.stderr
        bodies[flag] = message.decode_message(done.stdout)
    assert bodies["1"]["tp"].startswith("00-") and len(bodies["1"]["tp"].split("-")) == 4
    assert "tp" not in bodies[""]


def test_a_task_sent_from_a_running_task_is_a_child_of_its_run(env, run_worker, tmp_path):
    path = tmp_path / "spans.jsonl"
    traced = {"ENGINE_TRACING": "1", "ENGINE_TEST_SPANS": str(path)}
    run_worker("--pool", "prefork", "-c", "2", app="tests.apps.traced", extra_env=traced)
    script = ("import json, tests.apps.traced as t\nfrom engine.results import AsyncResult\n"
              "r = t.relay.delay(1)\ninner = r.get(timeout=60)\n"
              "AsyncResult(inner, t.app).get(timeout=60)\n"
              "print(json.dumps([r.id, inner]))\n")
    done = subprocess.run([sys.executable, "-c", script], env=dict(env, **traced), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outer_id, inner_id = json.loads(done.stdout)

    def named(found, name, task_id):
        return [s for s in found if s["name"] == name
                and s["attributes"]["messaging.message.id"] == task_id]

    found = wait_for(lambda: (lambda s: s if named(s, "run tests.apps.basic.add", inner_id)
                              else None)(spans(path)), message="the inner run span")
    (send_outer,) = named(found, "send tests.apps.traced.relay", outer_id)
    (run_outer,) = named(found, "run tests.apps.traced.relay", outer_id)
    (send_inner,) = named(found, "send tests.apps.basic.add", inner_id)
    (run_inner,) = named(found, "run tests.apps.basic.add", inner_id)
    assert run_outer["parent"] == send_outer["span_id"]
    assert send_inner["parent"] == run_outer["span_id"]
    assert run_inner["parent"] == send_inner["span_id"]
    assert len({s["trace_id"] for s in (send_outer, run_outer, send_inner, run_inner)}) == 1


@pytest.mark.parametrize("flag", ["", "1"])
def test_off_the_engine_imports_nothing_of_tracing(app, run_worker, flag):
    # redis-py imports opentelemetry's base packages by itself when they are installed:
    # the engine's own use (propagation) is what must stay out
    run_worker("--pool", "threads", "-c", "1", app="tests.apps.metrics",
               extra_env={"ENGINE_TRACING": flag})
    from tests.apps.metrics import imported
    name = "opentelemetry.propagate"
    assert imported.delay([name]).get(timeout=60) == {name: bool(flag)}


CHAIN = """
import json
import tests.apps.traced
from engine import chain
from tests.apps.basic import add
r = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
print(json.dumps({"value": r.get(timeout=60), "last": r.id}))
"""


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_chain_of_three_forms_one_trace(env, run_worker, tmp_path, pool):
    path = tmp_path / "spans.jsonl"
    traced = {"ENGINE_TRACING": "1", "ENGINE_TEST_SPANS": str(path)}
    run_worker("--pool", pool, "-c", "2", app="tests.apps.traced", extra_env=traced)
    done = subprocess.run([sys.executable, "-c", CHAIN], env=dict(env, **traced), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["value"] == 10

    def runs(found):
        return [s for s in found if s["name"] == "run tests.apps.basic.add"]
    found = wait_for(lambda: (lambda s: s if len(runs(s)) == 3 and any(
        r["attributes"]["messaging.message.id"] == out["last"] for r in runs(s)) else None)(
        spans(path)), message="three run spans")
    sends = [s for s in found if s["kind"] == "PRODUCER"]
    assert len(sends) == 1, [(s["name"], s["parent"], s["trace_id"]) for s in found]
    (send,) = sends
    assert send["name"].startswith("send ")
    steps = runs(found)
    # the three runs and the send that started them are one trace, each run its child
    assert len({s["trace_id"] for s in [send, *steps]}) == 1
    assert [s["parent"] for s in steps] == [send["span_id"]] * 3
    assert len({s["attributes"]["messaging.message.id"] for s in steps}) == 3


CHORD = """
import json
import tests.apps.traced
from engine import chord
from tests.apps.basic import add, echo
r = chord([add.s(i, i) for i in range(3)], echo.s()).apply_async()
print(json.dumps({"value": r.get(timeout=60), "body": r.id}))
"""


def test_a_chord_and_its_body_form_one_trace(env, run_worker, tmp_path):
    path = tmp_path / "spans.jsonl"
    traced = {"ENGINE_TRACING": "1", "ENGINE_TEST_SPANS": str(path)}
    run_worker("--pool", "prefork", "-c", "2", app="tests.apps.traced", extra_env=traced)
    done = subprocess.run([sys.executable, "-c", CHORD], env=dict(env, **traced), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["value"] == [0, 2, 4]

    def body_run(found):
        return [s for s in found if s["name"].startswith("run ")
                and s["attributes"]["messaging.message.id"] == out["body"]]
    found = wait_for(lambda: (lambda s: s if body_run(s) else None)(spans(path)),
                     message="the chord body's run span")
    (send,) = [s for s in found if s["kind"] == "PRODUCER"]
    runs = [s for s in found if s["name"].startswith("run ")]
    assert len(runs) == 4     # three members and the body
    assert len({s["trace_id"] for s in [send, *runs]}) == 1
    assert [s["parent"] for s in runs] == [send["span_id"]] * 4
