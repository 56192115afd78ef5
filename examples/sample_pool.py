"""An example custom pool: one fresh daemon thread per job, limits by async exceptions.

Use: ``ENGINE_CUSTOM_POOL=examples.sample_pool:SamplePool engine run --pool custom``.
Check: ``python -m pools.testing examples.sample_pool:SamplePool``.
"""

import ctypes
import threading
import time
from dataclasses import dataclass

from engine.exceptions import NotSupported, SoftTimeLimitExceeded, TimeLimitExceeded
from pools.base import Job, Outcome, Pool

_async_exc = ctypes.pythonapi["PyThreadState_SetAsyncExc"]   # (ident, exc), or None: clear


@dataclass(eq=False)
class _Entry:
    job: Job
    thread: threading.Thread | None = None
    started: float | None = None   #: monotonic, once the thread took the job


class SamplePool(Pool):
    """Each job gets its own thread, so a killed job's slot is free at once."""

    name = "sample"
    capabilities = frozenset({"interrupt", "kill", "grow", "shrink"})

    def start(self) -> None:
        if self.options.max_tasks_per_child or self.options.max_memory_per_child:
            raise NotSupported("the sample pool cannot recycle")
        self._lock = threading.Lock()
        self._jobs: dict[str, _Entry] = {}     # submitted and not yet reported
        self._stopped = False

    def free_slots(self) -> int:
        with self._lock:
            return 0 if self._stopped else max(0, self.concurrency - len(self._jobs))

    def submit(self, job: Job) -> None:
        entry = _Entry(job)
        entry.thread = threading.Thread(target=self._run, args=(entry,), daemon=True)
        with self._lock:
            self._jobs[job.id] = entry
        entry.thread.start()

    def _run(self, entry: _Entry) -> None:
        job, outcome = entry.job, None
        with self._lock:
            if self._jobs.get(job.id) is not entry:
                return                        # taken back by stop() before it started
            entry.started = time.monotonic()
        while True:
            try:                              # a limit may land outside the task's frames
                if outcome is None:
                    self.on_start(job.id)
                    outcome = self.runner.execute(job)
                with self._lock:              # nobody aims at us once we leave the table
                    _async_exc(ctypes.c_ulong(threading.get_ident()), None)
                    mine = self._jobs.get(job.id) is entry
                    if mine:
                        del self._jobs[job.id]
                break
            except (SoftTimeLimitExceeded, TimeLimitExceeded) as exc:
                outcome = outcome or Outcome.from_exception(job.id, exc)
        if mine:                              # else kill() reported it, or terminate() gave up
            self.on_outcome(outcome)

    def _running(self, job_id: str) -> _Entry | None:
        entry = self._jobs.get(job_id)
        return entry if entry is not None and entry.started is not None else None

    def interrupt(self, job_id: str) -> None:
        with self._lock:
            entry = self._running(job_id)
            if entry is not None:
                _async_exc(ctypes.c_ulong(entry.thread.ident),
                           ctypes.py_object(SoftTimeLimitExceeded))

    def kill(self, job_id: str) -> None:
        with self._lock:
            entry = self._running(job_id)
            if entry is None:
                return
            del self._jobs[job_id]            # frees the slot; the thread's result is dropped
            _async_exc(ctypes.c_ulong(entry.thread.ident), ctypes.py_object(TimeLimitExceeded))
        self.on_outcome(Outcome.from_exception(job_id, TimeLimitExceeded("hard time limit"),
                                               runtime=time.monotonic() - entry.started))

    def grow(self, n: int) -> None:
        self.concurrency += n

    def shrink(self, n: int) -> None:     # busy threads finish; free_slots waits for them
        self.concurrency = max(1, self.concurrency - n)

    def stop(self, timeout: float) -> list[str]:
        with self._lock:
            self._stopped = True
            never = [i for i, e in self._jobs.items() if e.started is None]
            for job_id in never:
                del self._jobs[job_id]
            running = list(self._jobs.values())
        deadline = time.monotonic() + timeout
        for entry in running:
            entry.thread.join(max(0.0, deadline - time.monotonic()))
        self.terminate()                      # whatever still runs gets no outcome
        return never

    def terminate(self) -> None:
        with self._lock:
            self._stopped = True
            self._jobs.clear()

    def info(self) -> dict:
        with self._lock:
            return {"pool": self.name, "concurrency": self.concurrency,
                    "running": sum(e.started is not None for e in self._jobs.values())}
