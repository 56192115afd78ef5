"""The command line: clear one-line errors, custom pools, purge, the embedded broker."""

import os
import signal
import subprocess
import sys

import pytest

from tests.apps.basic import add
from tests.conftest import ROOT


def engine(*args, env=None, timeout=60, input=None):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, input=input)


@pytest.mark.parametrize("args, text", [
    (["run", "-A", "no_such_module_abc"], "cannot import app module"),
    (["run", "-A", "tests.apps.basic:nothing"], "has no attribute"),
    (["run", "-A", "tests.apps.basic", "--pool", "bogus"], "unknown pool 'bogus'"),
    (["run", "-A", "tests.apps.basic", "--pool", "no.such:Pool"], "cannot import pool module"),
    (["run", "-A", "tests.apps.basic", "--pool", "custom"], "ENGINE_CUSTOM_POOL"),
    (["run", "-A", "tests.apps.basic", "-c", "0"], "must be at least 1"),
    (["run", "-A", "tests.apps.basic", "--lane", "nonsense"], "bad lane"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_clear_line_and_nonzero_exit(env, args, text):
    env = {k: v for k, v in env.items() if k != "ENGINE_CUSTOM_POOL"}
    result = engine(*args, env=env)
    assert result.returncode != 0
    assert text in result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_help_lists_the_commands(env):
    result = engine("--help", env=env)
    assert result.returncode == 0
    for word in ("run", "beat", "events", "inspect", "control", "purge", "bench", "broker"):
        assert word in result.stdout
    run_help = engine("run", "--help", env=env)
    assert "--pool" in run_help.stdout and "--lane" in run_help.stdout


def test_python_dash_m_and_console_script_agree(env):
    script = os.path.join(os.path.dirname(sys.executable), "engine")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "run" in result.stdout


def test_custom_pool_from_environment(app, run_worker):
    # Given a worker whose pool class is named by ENGINE_CUSTOM_POOL
    worker = run_worker("--pool", "custom", "-c", "2",
                        extra_env={"ENGINE_CUSTOM_POOL": "examples.sample_pool:SamplePool"})
    # Then tasks run through it
    assert add.delay(3, 4).get(timeout=60) == 7
    assert "sample" in worker.log.lower()


def test_pool_given_as_class_path(app, run_worker):
    run_worker("--pool", "pools.threads:ThreadsPool", "-c", "2")
    assert add.delay(1, 4).get(timeout=60) == 5


def test_app_from_environment(env, app, run_worker, tmp_path):
    from tests.conftest import Worker
    worker = Worker(["--pool", "solo"], env=dict(env, ENGINE_APP="tests.apps.basic"),
                    log_path=tmp_path / "w.log", cwd=ROOT)
    try:
        worker.wait_ready()
        assert add.delay(1, 1).get(timeout=60) == 2
    finally:
        worker.kill_all()


def test_purge_asks_unless_forced(app, env):
    add.delay(1, 2)
    add.delay(1, 3)
    refused = engine("purge", "-A", "tests.apps.basic", "-Q", "default", env=env)
    assert refused.returncode != 0
    assert app.broker.depth("default")["waiting"] == 2
    done = engine("purge", "-A", "tests.apps.basic", "-Q", "default", "-f", env=env)
    assert done.returncode == 0, done.stderr
    assert "2 message(s)" in done.stdout
    assert app.broker.depth("default")["waiting"] == 0


def test_embedded_broker_start_status_stop(tmp_path):
    # Given no broker configured and a fresh ENGINE_HOME
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env["ENGINE_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    try:
        # When a producer sends a task and a worker runs, both use the embedded Redis
        worker = subprocess.Popen([sys.executable, "-m", "engine", "run", "-A", "tests.apps.basic",
                                   "--pool", "solo"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        try:
            code = ("from tests.apps.basic import add; print(add.delay(2, 5).get(timeout=60))")
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
            assert out.stdout.strip() == "7", out.stderr
            status = engine("broker", "status", "--json", env=env)
            assert status.returncode == 0 and '"running": true' in status.stdout
            assert (tmp_path / "home" / "redis.sock").exists()
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0
            assert worker.stderr.read().count("using the embedded Redis") == 1   # once
    finally:
        stopped = engine("broker", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    assert engine("broker", "status", env=env).returncode != 0
    # persistent: the data directory keeps its append-only file
    assert any(p.name.startswith("appendonly") for p in (tmp_path / "home").iterdir())
