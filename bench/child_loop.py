"""CPU a job of the prefork child's loop, alone in one process (no supervisor, no Redis).

    .venv/bin/python bench/child_loop.py            # the loop alone on the machine
    .venv/bin/python bench/child_loop.py --busy 1   # with 1 busy-looping process beside it

The loop is ``pools.prefork.child._loop``'s, step by step, on a work table and an outbox of
this process: claim an offered slot, read it, decode the job, mark it running, run
``engine.bench_tasks.noop``, encode and publish its outcome, post ``done``. The figure is
process CPU a job (``time.process_time``), the best of 20 rounds of 500 jobs. With
``--busy N``, N processes spin meanwhile: on a VM whose vCPUs share a physical core, the
same loop costs more CPU while the other vCPU is busy, which is what every per-task CPU
figure of a loaded worker includes (docs/performance.md, "The machine").
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from engine import message
from engine.bench_tasks import app, noop
from engine.worker.runner import TaskRunner
from pools.prefork import child, shm

JOBS = 500
ROUNDS = 20


def _spin(stop) -> None:
    while not stop.is_set():
        for _ in range(10000):
            pass


def one_round(table: shm.WorkTable, outbox: shm.Outbox, done, runner: TaskRunner,
              body: bytes) -> float:
    """Process CPU µs a job over JOBS jobs, every slot offered first."""
    for slot in range(JOBS):
        table.offer(slot, slot + 1, body)
    start = time.process_time()
    for _ in range(JOBS):
        slot = table.claim(outbox)
        seq, raw, _, _ = table.read(slot)
        job = runner.load(raw)
        outbox.set_running(seq)
        outcome = runner.execute(job)
        outbox.put(shm.FINISHED, child.encode_outcome(seq, outcome))
        outbox.set_phase(shm.IDLE)
        done.release()
        outbox.count_done()
    spent = time.process_time() - start
    outbox.drain()                       # as the supervisor would: the ring stays empty
    for slot in range(JOBS):
        table.release(slot)
    return spent / JOBS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="busy-looping processes beside the loop (default 0)")
    args = parser.parse_args()
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    try:
        runner = TaskRunner(app, "bench")
        table, outbox, done = shm.WorkTable(JOBS), shm.Outbox(), shm._ctx.Semaphore(0)
        body = message.encode_message("00000000-0000-0000-0000-000000000000", noop.name,
                                      (), {}, ignore_result=True)
        one_round(table, outbox, done, runner, body)     # warm up
        rounds = [one_round(table, outbox, done, runner, body) for _ in range(ROUNDS)]
        print(f"child loop, no-op: {min(rounds):.1f} µs CPU a job (best of {ROUNDS} rounds of {JOBS}; median "
              f"{sorted(rounds)[len(rounds) // 2]:.1f}), {args.busy} busy process(es) beside it")
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join(5)


if __name__ == "__main__":
    main()
