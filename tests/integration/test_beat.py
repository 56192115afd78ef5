"""Beat in real time: ``engine beat`` processes and ``engine run -B`` against the test Redis."""

from __future__ import annotations

import signal
import uuid

import pytest

from engine import message
from engine.testing import EngineProcess
from tests.conftest import ROOT, wait_for

ENTRY = "every-second"


@pytest.fixture
def start_beat(env, tmp_path):
    started: list[EngineProcess] = []

    def start() -> EngineProcess:
        beat = EngineProcess("beat", ["-A", "tests.apps.beat"], env=env,
                             log_path=tmp_path / f"beat-{len(started)}.log", cwd=ROOT)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.kill_all()


def sent_ids(client, prefix) -> list[str]:
    entries = client.xrange(f"{prefix}:q:{{default}}")
    return [message.decode_message(fields[b"m"])["id"] for _, fields in entries]


def leader_pid(client, prefix) -> int | None:
    token = client.get(f"{prefix}:beat:lock")
    return int(token.decode().split(":")[1]) if token else None


def slot_id(prefix: str, slot: float) -> str:
    from engine.beat import ID_NAMESPACE
    return str(uuid.uuid5(ID_NAMESPACE, f"{prefix}:beat:state|{ENTRY}|{slot:.6f}"))


def test_beat_sends_an_interval_entry_in_real_time(start_beat, client, prefix):
    # Given one `engine beat` with a 1 s entry
    beat = start_beat()
    # When it runs for a few seconds
    wait_for(lambda: len(sent_ids(client, prefix)) >= 3, message="three runs")
    # Then each run is a message for the entry's task, each with its own id
    bodies = [message.decode_message(f[b"m"])
              for _, f in client.xrange(f"{prefix}:q:{{default}}")]
    assert {b["task"] for b in bodies} == {"tests.apps.beat.tick"}
    assert all(b["args"] == ["s"] for b in bodies)
    ids = [b["id"] for b in bodies]
    assert len(set(ids)) == len(ids)
    assert beat.proc.poll() is None


def test_two_beats_never_double_fire_and_the_standby_takes_over(start_beat, client, prefix):
    # Given two beat processes
    beats = {b.pid: b for b in (start_beat(), start_beat())}
    wait_for(lambda: leader_pid(client, prefix) in beats, message="a leader")
    wait_for(lambda: len(sent_ids(client, prefix)) >= 3, message="runs by the leader")
    leader = beats[leader_pid(client, prefix)]
    standby = next(b for b in beats.values() if b is not leader)
    # When the leader is SIGKILLed (it cannot hand the lock back)
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait()
    before = len(sent_ids(client, prefix))
    # Then the standby takes the lock once the lease runs out, and goes on sending
    wait_for(lambda: leader_pid(client, prefix) == standby.pid, message="the standby to lead")
    wait_for(lambda: len(sent_ids(client, prefix)) >= before + 3, message="runs by the standby")
    assert "leader now" in standby.log
    # And no slot was ever sent twice
    ids = sent_ids(client, prefix)
    assert len(set(ids)) == len(ids)


def test_a_restart_neither_repeats_nor_leaves_the_grid(start_beat, client, prefix):
    # Given a beat that sent a few runs and was stopped
    first = start_beat()
    wait_for(lambda: len(sent_ids(client, prefix)) >= 2, message="first runs")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(60) == 0
    import json
    last = json.loads(client.hget(f"{prefix}:beat:state", ENTRY))["last"]
    before = sent_ids(client, prefix)
    assert before[-1] == slot_id(prefix, last)
    # When a new beat starts
    start_beat()
    wait_for(lambda: len(sent_ids(client, prefix)) >= len(before) + 2, message="runs after restart")
    # Then nothing sent before is sent again, and the new runs are on the same 1 s grid
    after = sent_ids(client, prefix)[len(before):]
    assert not set(after) & set(before)
    grid = {slot_id(prefix, last + k * 1.0): k for k in range(1, 600)}
    ks = [grid.get(task_id) for task_id in after]
    assert None not in ks, "a run off the original grid"
    assert ks == list(range(ks[0], ks[0] + len(ks))), "a slot skipped while the beat ran"


def test_embedded_beat_in_a_worker_runs_the_schedule(run_worker, client, prefix):
    # Given `engine run -B`
    worker = run_worker("--pool", "threads", "-c", "2", "-B", app="tests.apps.beat")
    # Then the scheduled task runs in that worker, repeatedly
    wait_for(lambda: int(client.get(f"{prefix}:ticks") or 0) >= 2, message="scheduled runs")
    assert "beat    : embedded" in worker.log
    # And a warm stop hands the lock back
    assert worker.stop() == 0
    assert client.get(f"{prefix}:beat:lock") is None
