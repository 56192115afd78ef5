"""The sample tasks the conformance suite runs, and ``SampleRunner``, the Runner over them.

Owns ``TASKS`` (task name -> function; ``sample_task`` adds more) and the wire encoding of a
sample message. The harness submits these; the pools under test execute them through
``SampleRunner``, which is picklable and usable after fork or spawn.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

import msgpack

from engine.exceptions import SoftTimeLimitExceeded
from pools.base import SUCCESS, Job, Outcome

#: how often sample tasks and the harness look at the world while waiting (not a sync point)
POLL = 0.005


class SampleError(Exception):
    """What ``sample.fail`` raises, so a FAILURE can be told from an accident."""


#: task name -> function; ``sample_task`` adds more (the gevent tests add a hub blocker)
TASKS: dict[str, Callable] = {}


def sample_task(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        TASKS[name] = fn
        return fn
    return register


def touch(path: str) -> None:
    Path(path).touch()


@sample_task("sample.ok")
def ok():
    return "ok"


@sample_task("sample.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@sample_task("sample.fail")
def fail(message="boom"):
    raise SampleError(message)


@sample_task("sample.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@sample_task("sample.whoami")
def whoami():
    return {"pid": os.getpid(), "thread": threading.get_ident()}


@sample_task("sample.hold")
def hold(started, gate, limit=60.0):
    """Runs until the file ``gate`` exists; ``started`` and ``started.end`` mark its life."""
    touch(started)
    give_up = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > give_up:
            raise TimeoutError("the gate never opened")
        time.sleep(POLL)
    touch(started + ".end")
    return "released"


@sample_task("sample.catch_soft")
def catch_soft(started, limit=60.0):
    """Waits for its soft limit, catches it and returns normally."""
    give_up = time.monotonic() + limit
    try:
        touch(started)
        while time.monotonic() < give_up:
            time.sleep(POLL)
    except SoftTimeLimitExceeded:
        return "caught"
    raise TimeoutError("no soft time limit arrived")


def _swallowing_soft_limits(started: str, work: Callable[[], object]) -> tuple[object, int]:
    """Run ``work`` to its end, swallowing every soft limit (each touches ``started.soft``);
    returns its value and how many were swallowed."""
    swallowed, announced = 0, False
    while True:
        # Everything after the marker sits inside the try: the supervisor interrupts as soon
        # as it sees the marker, and the soft limit must not land outside the handler.
        try:
            if not announced:
                announced = True
                touch(started)
            return work(), swallowed
        except SoftTimeLimitExceeded:
            swallowed += 1
            touch(started + ".soft")


@sample_task("sample.stubborn")
def stubborn(started, limit=60.0):
    """Swallows every soft limit (touching ``started.soft``) while sleeping in short steps."""
    give_up = time.monotonic() + limit

    def nap() -> None:
        while time.monotonic() < give_up:
            time.sleep(POLL)
    return _swallowing_soft_limits(started, nap)[1]


@sample_task("sample.spin")
def spin(started, limit=60.0):
    """A pure-Python busy loop that swallows soft limits; only a preemptive kill ends it."""
    give_up = time.monotonic() + limit
    spins = 0

    def busy() -> int:
        nonlocal spins   # counted across soft limits, as one loop would
        while True:
            for _ in range(10_000):
                spins += 1
            if time.monotonic() > give_up:
                return spins
    return _swallowing_soft_limits(started, busy)[0]


@sample_task("sample.block")
def block(started, seconds=60.0):
    """One long blocking call (time.sleep): no Python bytecode runs until it returns."""
    touch(started)
    time.sleep(seconds)
    return "slept"


@sample_task("sample.rendezvous")
def rendezvous(directory, n, name, limit=60.0):
    """Arrives in ``directory`` and waits for ``n`` arrivals: proves ``n`` jobs overlap."""
    touch(os.path.join(directory, name))
    give_up = time.monotonic() + limit
    while True:
        seen = len(os.listdir(directory))
        if seen >= n:
            return {"seen": seen, "pid": os.getpid(), "thread": threading.get_ident()}
        if time.monotonic() > give_up:
            raise TimeoutError(f"only {seen} of {n} jobs ever ran at once")
        time.sleep(POLL)


def encode_body(job_id: str, task: str, args=(), kwargs=None, *, soft=None, hard=None) -> bytes:
    """A message body as the wire protocol of CONTRACT.md spells it."""
    body = {"v": 1, "id": job_id, "task": task, "args": list(args), "kwargs": kwargs or {},
            "retries": 0}
    if soft is not None:
        body["soft"] = soft
    if hard is not None:
        body["hard"] = hard
    return msgpack.packb(body)


class SampleRunner:
    """A Runner (``pools.base.Runner``) over ``TASKS``; picklable, usable after fork or spawn."""

    def load(self, body: bytes) -> Job:
        data = msgpack.unpackb(body)
        return Job(id=data["id"], task=data["task"], args=list(data.get("args", [])),
                   kwargs=dict(data.get("kwargs", {})), body=body,
                   retries=data.get("retries", 0), soft_limit=data.get("soft"),
                   hard_limit=data.get("hard"))

    def execute(self, job: Job) -> Outcome:
        start = time.perf_counter()
        try:
            fn = TASKS[job.task]
            value = fn(*job.args, **job.kwargs)
            return Outcome(job.id, SUCCESS, msgpack.packb(value),
                           runtime=time.perf_counter() - start)
        except Exception as exc:   # SoftTimeLimitExceeded and TimeLimitExceeded included
            return Outcome.from_exception(job.id, exc, runtime=time.perf_counter() - start)
