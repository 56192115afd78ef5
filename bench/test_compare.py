"""The engine against Celery, Dramatiq and Huey, as ratios (issue 8), from pytest.

Off by default: it needs the compare venv (``bench/.venv-compare``, made by
``bench/compare/setup.sh``) and takes minutes. ``BENCH_COMPARE=1 tox -e bench`` or
``BENCH_COMPARE=1 pytest bench/test_compare.py -s`` runs the headline rows (no-op prefork
-c 2 against Celery prefork -c 2, Dramatiq, Huey and the redis-py ceiling; sequential
latency) once in quick mode and prints the bars; ``BENCH_COMPARE=full`` runs them at the
issue's sizes, medians of 3. The full matrix is ``make compare`` / ``tox -e compare``
(``bash bench/compare/run.sh``). Nothing about speed is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / "bench" / ".venv-compare" / "bin" / "python"
MODE = os.environ.get("BENCH_COMPARE", "")

pytestmark = pytest.mark.skipif(
    not MODE or not VENV_PY.exists(),
    reason="set BENCH_COMPARE=1 (quick) or =full, with bench/.venv-compare set up")


def test_compare_headline(benchmark, tmp_path):
    benchmark.group = "compare (one run of the harness)"
    argv = [str(VENV_PY), str(ROOT / "bench" / "compare" / "run.py"),
            "--workloads", "noop,latency",
            "--configs", "engine:prefork:2,celery:prefork:2,dramatiq,huey,redis-py",
            "--out", str(tmp_path)]
    if MODE != "full":
        argv.append("--quick")
    done = {}

    def run():
        done["proc"] = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                                      timeout=3600)

    benchmark.pedantic(run, rounds=1, iterations=1)
    proc = done["proc"]
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "compare.json").read_text())
    for t in doc["targets"]:
        benchmark.extra_info[t["target"]] = round(t["value"], 3)
