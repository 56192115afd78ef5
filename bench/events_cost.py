"""What events cost: no-op throughput of one worker with events on and off.

    .venv/bin/python bench/events_cost.py [-n 20000] [--pool threads] [-c 4] [--rounds 3]

Starts a private redis-server, and per round and mode: enqueues N no-op tasks, starts
``engine run`` (with or without ``--no-events``), and times from the first message taken
to the queue drained. Modes alternate so that drift hits both alike. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import embedded  # noqa: E402


def one_round(url: str, *, events: bool, n: int, pool: str, concurrency: int) -> float:
    prefix = f"ev{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, ENGINE_BROKER_URL=url, ENGINE_KEY_PREFIX=prefix,
               PYTHONPATH=str(ROOT))
    os.environ.update(ENGINE_BROKER_URL=url, ENGINE_KEY_PREFIX=prefix)
    from tests.apps.basic import app
    app.close()
    app.tasks["tests.apps.basic.noop"].delay_many([() for _ in range(n)])
    broker = app.broker
    stream = broker.keys.queue("default")
    args = [sys.executable, "-m", "engine", "run", "-A", "tests.apps.basic", "--pool", pool,
            "-c", str(concurrency), "-l", "warning", "-n", prefix]
    if not events:
        args.append("--no-events")
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def remaining() -> int:
            d = broker.depth("default")
            return d["waiting"] + d["unacked"]
        while remaining() >= n:
            time.sleep(0.002)
        start = time.perf_counter()
        while remaining() > 0:
            time.sleep(0.002)
        elapsed = time.perf_counter() - start
        return n / elapsed
    finally:
        proc.terminate()
        proc.wait(60)
        app.client.delete(stream, broker.keys.events)
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engine-events-cost-") as tmp:
        base = Path(tmp)
        sock = base / "redis.sock"
        server = subprocess.Popen(embedded.server_args(base, socket=sock, daemonize=False,
                                                       aof=False),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not embedded.ping(base):
                time.sleep(0.05)
            url = f"unix://{sock}?db=0"
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(args.rounds):
                for mode in ("on", "off"):
                    rates[mode].append(one_round(url, events=mode == "on", n=args.n,
                                                 pool=args.pool, concurrency=args.concurrency))
            on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
            print(json.dumps({"pool": args.pool, "concurrency": args.concurrency,
                              "tasks": args.n, "rounds": args.rounds,
                              "events_on": [round(r) for r in rates["on"]],
                              "events_off": [round(r) for r in rates["off"]],
                              "median_on": round(on), "median_off": round(off),
                              "cost_percent": round((off - on) / off * 100, 1)}))
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
