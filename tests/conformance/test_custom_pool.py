"""The example custom pool, loaded the way users load theirs: ENGINE_CUSTOM_POOL + --pool custom."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pools import CUSTOM_ENV, resolve
from pools.testing import PoolTests

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "examples.sample_pool:SamplePool"


def _load_custom():
    if str(ROOT) not in sys.path:       # examples/ is not an installed package
        sys.path.insert(0, str(ROOT))
    saved = os.environ.get(CUSTOM_ENV)
    os.environ[CUSTOM_ENV] = SAMPLE
    try:
        return resolve("custom")
    finally:
        if saved is None:
            del os.environ[CUSTOM_ENV]
        else:
            os.environ[CUSTOM_ENV] = saved


class TestCustomPool(PoolTests):
    pool_class = _load_custom()
    concurrency = 3


def test_the_custom_pool_is_the_example():
    # Given ENGINE_CUSTOM_POOL naming the example, When resolved as "custom", Then it is it
    assert TestCustomPool.pool_class.__module__ == "examples.sample_pool"
    assert TestCustomPool.pool_class.__name__ == "SamplePool"


@pytest.mark.slow
def test_one_command_runs_the_suite_on_a_plugin():
    # Given a plugin author's class path
    # When they run the one command (only a few cases, to stay quick)
    proc = subprocess.run(
        [sys.executable, "-m", "pools.testing", SAMPLE, "-c", "2", "-q",
         "-k", "success or raises or stop_returns"],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    # Then pytest ran the suite against it and it passed
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, proc.stdout[-4000:]


def test_one_command_rejects_a_bad_class_path():
    # Given a class path that does not exist, When run, Then one clear line and non-zero exit
    proc = subprocess.run([sys.executable, "-m", "pools.testing", "no_such_mod:Pool"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: cannot import pool module")
    assert "Traceback" not in proc.stderr
