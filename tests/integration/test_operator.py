"""The operator's first week (issue 17): what a person sees when something is wrong.

Every case runs the real ``engine`` command and checks the exact number of lines it prints
and its exit code: one clear line, never a traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from engine import embedded
from tests.conftest import ROOT, wait_for


def engine(*args, env=None, timeout=60, input=None):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, input=input)


def lines(text: str) -> list[str]:
    return text.splitlines()


def free_port() -> int:
    """A TCP port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nowhere(env):
    """The environment with a broker URL (with a password) that nothing answers on."""
    return dict(env, ENGINE_BROKER_URL=f"redis://:s3cret@127.0.0.1:{free_port()}/0")


# -- 1. an unreachable broker ---------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["inspect", "ping"], ["inspect", "stats"], ["control", "shutdown"], ["control", "pool-grow"],
    ["purge", "-f"], ["events", "--dump"],
])
def test_cli_commands_answer_one_line_when_the_broker_is_unreachable(nowhere, args):
    result = engine(*args, "-A", "tests.apps.basic", env=nowhere)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = lines(result.stderr)
    assert line.startswith(f"engine {args[0]}: error: cannot reach the broker at redis://:***@")
    assert "s3cret" not in line and "Connection refused" in line


def test_cli_commands_answer_one_line_for_a_bad_host_name(env):
    bad = dict(env, ENGINE_BROKER_URL="redis://no-such-host.invalid:6379/0")
    result = engine("inspect", "ping", "-A", "tests.apps.basic", env=bad)
    assert result.returncode == 1
    [line] = lines(result.stderr)
    assert "cannot reach the broker at redis://no-such-host.invalid:6379/0" in line


def test_worker_logs_one_line_per_retry_then_gives_up(nowhere):
    # Given an app allowing two retries (tests.apps.impatient) and no broker
    result = engine("run", "-A", "tests.apps.impatient", "-c", "1", "--pool", "solo", env=nowhere)
    # Then: one line per retry (URL redacted, next attempt time), one line giving up, exit 1
    assert result.returncode == 1, result.stderr
    out = lines(result.stderr)
    assert len(out) == 3, result.stderr
    assert "retry 1/2 in 1 s (at " in out[0] and "retry 2/2 in 2 s (at " in out[1]
    assert all("redis://:***@127.0.0.1:" in line for line in out)
    assert out[2].startswith("engine run: error: cannot reach the broker")
    assert out[2].endswith("(gave up after 2 retries)")
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_beat_waits_for_the_broker_like_a_worker(nowhere):
    result = engine("beat", "-A", "tests.apps.impatient", env=nowhere)
    assert result.returncode == 1, result.stderr
    out = lines(result.stderr)
    assert len(out) == 3, result.stderr
    assert "retry 1/2 in 1 s" in out[0] and "retry 2/2 in 2 s" in out[1]
    assert out[2].startswith("engine beat: error: cannot reach the broker at redis://:***@")


def test_worker_without_retry_gives_up_at_once(nowhere, tmp_path):
    (tmp_path / "noretry.py").write_text(
        "from engine import Engine\napp = Engine('noretry', broker_connection_retry=False)\n")
    env = dict(nowhere, PYTHONPATH=f"{tmp_path}:{nowhere['PYTHONPATH']}")
    result = engine("run", "-A", "noretry", "--pool", "solo", env=env)
    assert result.returncode == 1
    [line] = lines(result.stderr)
    assert line.startswith("engine run: error: cannot reach the broker")


def test_worker_waits_for_the_broker_and_starts_when_it_comes(env, run_worker, tmp_path):
    # Given a worker started while nothing listens on its broker's port
    port = free_port()
    worker = run_worker("--pool", "solo", app="tests.apps.basic", ready=False,
                        extra_env={"ENGINE_BROKER_URL": f"redis://127.0.0.1:{port}/0"})
    wait_for(lambda: "retry 1/100" in worker.log, message="the first retry line")
    # When a Redis starts on that port
    args = embedded.server_args(tmp_path, socket=tmp_path / "late.sock", daemonize=False,
                                aof=False)
    args[args.index("--port") + 1] = str(port)
    server = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # Then the worker connects and becomes ready, saying it got through
        worker.wait_ready()
        assert "connected to the broker at redis://127.0.0.1:" in worker.log
        assert "Traceback" not in worker.log
    finally:
        worker.kill_all()
        server.terminate()
        server.wait(15)


# -- 2. an app module that does not import ------------------------------------------------
BROKEN = {
    "broken_syntax.py": "from engine import Engine\napp = Engine('b')\ndef f(:\n    pass\n",
    "broken_import.py": "from engine import Engine\nimport no_such_dependency_xyz\napp = Engine('b')\n",
    "discovers.py": "from engine import Engine\napp = Engine('b')\napp.autodiscover_tasks(['pkg'])\n",
    "includes.py": "from engine import Engine\napp = Engine('b', include=['pkg.tasks'])\n",
    "two_apps.py": "from engine import Engine\napp = Engine('a')\nother = Engine('b')\nalias = app\n",
    "pkg/__init__.py": "",
    "pkg/tasks.py": "import os\n\nraise RuntimeError('boom')\n",
}


@pytest.fixture
def broken(env, tmp_path):
    for name, text in BROKEN.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    return dict(env, PYTHONPATH=f"{tmp_path}:{env['PYTHONPATH']}"), tmp_path


@pytest.mark.parametrize("module, where, what", [
    ("broken_syntax", "broken_syntax.py, line 3", "SyntaxError: invalid syntax"),
    ("broken_import", "broken_import.py, line 2",
     "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
    ("discovers", "pkg/tasks.py, line 3", "RuntimeError: boom"),
    ("includes", "pkg/tasks.py, line 3", "RuntimeError: boom"),
])
def test_a_broken_app_module_gives_one_line_naming_file_line_and_error(broken, module, where,
                                                                        what):
    env, tmp_path = broken
    result = engine("run", "-A", module, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = lines(result.stderr)
    assert line.startswith(f"engine run: error: cannot import app module {module!r}: {tmp_path}/")
    assert f"{where}: {what}" in line
    # with -l debug the traceback comes first, the same line last
    debug = engine("run", "-A", module, "-l", "debug", env=env)
    assert debug.returncode == 2
    assert lines(debug.stderr)[0].startswith(("Traceback", "  File")), debug.stderr
    assert lines(debug.stderr)[-1] == line


def test_a_module_with_two_apps_is_refused_naming_both(broken):
    env, _ = broken
    result = engine("inspect", "ping", "-A", "two_apps", env=env)
    assert result.returncode == 2
    assert lines(result.stderr) == [
        "engine inspect: error: module 'two_apps' defines 2 Engine apps (app, other): "
        "say which with -A two_apps:app or -A two_apps:other"]


# -- 3. log levels ------------------------------------------------------------------------
@pytest.fixture
def embedded_env(env):
    """No broker configured: the embedded Redis under this session's ENGINE_HOME."""
    return {k: v for k, v in env.items() if k != "ENGINE_BROKER_URL"}


@pytest.mark.parametrize("flag", [[], ["-l", "warning"], ["--loglevel", "Error"]])
def test_operator_commands_are_quiet_about_the_embedded_redis(embedded_env, flag):
    result = engine("inspect", "ping", "-A", "tests.apps.basic", "-t", "0.2", *flag,
                    env=embedded_env)
    assert result.returncode == 1
    assert lines(result.stderr) == ["engine inspect: no reply from any worker within 0.2 s"]


@pytest.mark.parametrize("flag", [["-l", "INFO"], ["-l", "Info"], ["--loglevel", "DEBUG"]])
def test_log_levels_in_any_case_and_the_long_alias(embedded_env, flag):
    # an explicit info or debug level shows the embedded Redis line (shared by the user)
    result = engine("purge", "-f", "-A", "tests.apps.basic", "-Q", "nothing_here", *flag,
                    env=embedded_env)
    assert result.returncode == 0, result.stderr
    embedded_lines = [line for line in lines(result.stderr) if "embedded Redis" in line]
    assert len(embedded_lines) == 1
    assert "shared by every checkout" in embedded_lines[0]
    assert lines(result.stdout) == ["nothing_here: 0 message(s) deleted", "purged 0 message(s)"]


def test_a_bad_log_level_is_one_line(env):
    result = engine("run", "-A", "tests.apps.basic", "-l", "loud", env=env)
    assert result.returncode == 2
    [line] = lines(result.stderr)
    assert "invalid choice: 'loud'" in line


@pytest.mark.parametrize("command", ["run", "beat", "inspect", "control", "purge", "events"])
def test_every_command_with_l_has_loglevel_with_help(env, command):
    result = engine(command, "--help", env=env)
    assert result.returncode == 0
    assert "-l LEVEL, --loglevel LEVEL" in result.stdout
    assert "debug, info, warning, error, in any case" in " ".join(result.stdout.split())


def test_dashboard_port_and_address_have_help(env):
    text = " ".join(engine("dashboard", "--help", env=env).stdout.split())
    assert "--port PORT TCP port to listen on (default 5555)" in text
    assert "--address ADDRESS address to listen on (default 127.0.0.1" in text


# -- 4. smaller ones ------------------------------------------------------------------------
def test_bare_engine_prints_the_usage_and_exits_2(env):
    result = engine(env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    err = lines(result.stderr)
    assert err[0] == "usage: engine [-h] [--version] [-A APP] COMMAND ..."
    assert any(line.split()[:1] == ["run"] for line in err)


def test_version(env):
    from engine import __version__
    result = engine("--version", env=env)
    assert result.returncode == 0
    assert lines(result.stdout) == [f"engine {__version__}"]


def test_control_takes_celerys_underscore_spelling(env):
    # a bad count is reported under the verb's canonical name: the spelling was accepted
    result = engine("control", "-A", "tests.apps.basic", "pool_grow", "many", env=env)
    assert result.returncode == 2
    assert lines(result.stderr) == ["engine control: error: pool-grow needs a positive number, "
                                    "got 'many'"]
    bad = engine("control", "-A", "tests.apps.basic", "pool_explode", env=env)
    assert bad.returncode == 2 and "invalid choice: 'pool-explode'" in bad.stderr


def test_broker_status_of_a_configured_broker(env, redis_server):
    result = engine("broker", "status", env=env)
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert out[0] == f"broker  : {redis_server.url} (configured: ENGINE_BROKER_URL)"
    assert out[1] == "running : yes"
    assert len(out) == 5 and out[2].startswith("version : ")
    as_json = engine("broker", "status", "--json", env=env)
    info = __import__("json").loads(as_json.stdout)
    assert info["broker"] == redis_server.url and info["configured"] and info["running"]


def test_broker_status_of_an_unreachable_configured_broker(nowhere):
    result = engine("broker", "status", env=nowhere)
    assert result.returncode == 1 and result.stdout == ""
    [line] = lines(result.stderr)
    assert line.startswith("engine broker: error: cannot reach the broker at redis://:***@")


def test_broker_status_of_the_embedded_redis_when_none_is_configured(embedded_env, tmp_path):
    env = dict(embedded_env, ENGINE_HOME=str(tmp_path / "home"))
    result = engine("broker", "status", env=env)
    assert result.returncode == 3   # not running
    assert lines(result.stdout) == [
        "broker  : the embedded Redis (no broker configured)",
        f"socket  : {tmp_path}/home/redis.sock", f"home    : {tmp_path}/home", "running : no"]


def test_a_busy_dashboard_port_is_one_line_and_exit_1(env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = engine("dashboard", "-A", "tests.apps.basic", "--port", str(port), env=env)
    assert result.returncode == 1
    assert lines(result.stderr) == [
        f"engine dashboard: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another dashboard? choose one with --port)"]


# -- 5. inspect active and reserved ---------------------------------------------------------
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_active_counts_only_started_jobs_and_reserved_lists_the_rest(app, env, run_worker,
                                                                     pool):
    import json

    from tests.apps.basic import sleep
    from tests.conftest import wait_started
    # Given a one-slot worker holding more than it runs
    run_worker("--pool", pool, "-c", "1", "--prefetch", "4", "-n", f"one-{pool}")
    results = [sleep.delay(60) for _ in range(4)]
    wait_started(app, results[0].id)

    def ask(verb):
        out = engine("inspect", "-A", "tests.apps.basic", verb, "--json", "-t", "5", env=env)
        return json.loads(out.stdout).get(f"one-{pool}") if out.stdout.strip() else None

    # Then active lists the one started job, never more than the slots ...
    wait_for(lambda: len(ask("reserved") or ()) == 3, message="three reserved")
    active = ask("active")
    assert [job["id"] for job in active] == [results[0].id]
    assert active[0]["runtime"] >= 0
    # ... reserved the three prefetched ones, and stats agree
    assert {job["id"] for job in ask("reserved")} == {r.id for r in results[1:]}
    stats = ask("stats")
    assert stats["active"] == 1 and stats["prefetched"] == 3
    human = engine("inspect", "-A", "tests.apps.basic", "stats", "-t", "5", env=env).stdout
    assert ", 1 running, 3 prefetched, " in lines(human)[0]
    human = lines(engine("inspect", "-A", "tests.apps.basic", "reserved", "-t", "5",
                         env=env).stdout)
    assert human[0] == f"-> one-{pool}: 3 reserved (prefetched, not started)"
    assert len(human) == 4 and all(f"tests.apps.basic.sleep[" in line for line in human[1:])
    human = lines(engine("inspect", "-A", "tests.apps.basic", "active", "-t", "5",
                         env=env).stdout)
    assert human[0] == f"-> one-{pool}: 1 running" and len(human) == 2
    for r in results:
        r.revoke(terminate=True)
