"""Events from real workers: ``engine events --dump``, batching, and ``--no-events``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from engine import events
from tests.conftest import ROOT, wait_for

APP = "tests.apps.basic"


class Dump:
    """``engine events --dump`` in the background, its lines parsed as they come."""

    def __init__(self, env: dict, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "events", "-A", APP,
                                      "--dump", *args], env=env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines)]

    def find(self, **match) -> list[dict]:
        return [e for e in self.events if all(e.get(k) == v for k, v in match.items())]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def dump(env):
    started: list[Dump] = []

    def start(*args: str) -> Dump:
        started.append(Dump(env, *args))
        return started[-1]

    yield start
    for d in started:
        d.kill()


def test_dump_prints_one_json_event_a_line(app, run_worker, dump):
    # Given a worker and a dump that starts from the beginning of the stream
    run_worker("--pool", "threads", "-c", "2", "-n", "ev1")
    out = dump("--since", "0")
    # When one task succeeds and one fails
    ok = app.tasks["tests.apps.basic.add"].delay(2, 3)
    bad = app.tasks["tests.apps.basic.fail"].delay("kaboom")
    wait_for(lambda: out.find(type="task-failed", id=bad.id), message="task-failed")
    wait_for(lambda: out.find(type="task-succeeded", id=ok.id), message="task-succeeded")
    # Then each line is an event with type, ts and worker; task events carry id and task
    for event in out.events:
        assert {"type", "ts", "worker"} <= set(event)
        if event["type"].startswith("task-"):
            assert {"id", "task"} <= set(event)
    assert [e["type"] for e in out.events if e.get("id") == ok.id] == [
        "task-received", "task-started", "task-succeeded"]
    (failed,) = out.find(type="task-failed", id=bad.id)
    assert failed["task"] == "tests.apps.basic.fail" and failed["worker"] == "ev1"
    assert failed["exception"].endswith("CustomError") and failed["message"] == "kaboom"
    assert out.find(type="worker-online", worker="ev1")
    wait_for(lambda: out.find(type="worker-heartbeat", worker="ev1"), message="a heartbeat")


def test_dump_follows_new_events_and_shows_offline(app, run_worker, dump):
    # Given a worker, and a dump from now on that has seen it beat (so it is reading)
    worker = run_worker("--pool", "threads", "-c", "1", "-n", "ev2")
    out = dump()
    wait_for(lambda: out.find(type="worker-heartbeat", worker="ev2"), message="a heartbeat")
    assert not out.find(type="worker-online")   # the past is not replayed
    r = app.tasks["tests.apps.basic.add"].delay(1, 1)
    wait_for(lambda: out.find(type="task-succeeded", id=r.id), message="task-succeeded")
    assert worker.stop() == 0
    wait_for(lambda: out.find(type="worker-offline", worker="ev2"), message="worker-offline")


def test_events_are_batched_into_few_stream_entries(app, run_worker):
    # Given a worker that runs 200 tasks
    run_worker("--pool", "threads", "-c", "4", "-n", "ev3")
    results = app.tasks["tests.apps.basic.add"].delay_many([(i, i) for i in range(200)])
    app.gather(results, timeout=60)
    stream = app.broker.keys.events

    def task_events():
        entries = app.client.xrange(stream)
        found = [e for _, f in entries for e in events.unpack(f) if e["type"] == "task-succeeded"]
        return (entries, found) if len(found) == 200 else None
    entries, _ = wait_for(task_events, message="200 task-succeeded events")
    # Then the 600+ task events went out in far fewer XADDs than events
    total = sum(len(events.unpack(f)) for _, f in entries)
    assert total >= 600
    assert len(entries) < total / 2


def test_no_events_switch_publishes_nothing(app, run_worker):
    run_worker("--pool", "threads", "-c", "1", "-n", "ev4", "--no-events")
    assert app.tasks["tests.apps.basic.add"].delay(1, 2).get(timeout=30) == 3
    assert app.client.xlen(app.broker.keys.events) == 0
