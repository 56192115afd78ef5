"""``make demo``: start a worker on the embedded Redis, send tasks, print their results.

The worker is a real ``engine run`` process; it is stopped with SIGTERM (a warm shutdown)
at the end. The embedded Redis keeps running for the next time (``engine broker stop``).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    worker = subprocess.Popen([sys.executable, "-m", "engine", "run", "-A", "tasks",
                               "--pool", "prefork", "-c", "2"], cwd=HERE, env=env)
    try:
        sys.path.insert(0, str(HERE))
        from tasks import add, app, hello
        result = hello.delay("world")
        print(f"hello.delay('world') -> {result.get(timeout=60)!r}")
        started = time.perf_counter()
        results = add.delay_many([(i, i) for i in range(1000)])
        values = app.gather(results, timeout=120)
        elapsed = time.perf_counter() - started
        assert values == [2 * i for i in range(1000)]
        print(f"1000 x add: all results back in {elapsed:.2f} s ({1000 / elapsed:,.0f} tasks/s)")
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


if __name__ == "__main__":
    sys.exit(main())
