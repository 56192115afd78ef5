"""Two Celery task modules written by others run on a real worker with only their imports
changed (issue 16).

Nothing of theirs is kept in this repository: ``make venv`` downloads the source archives
that ``thirdparty/requirements.txt`` names into ``.venv/thirdparty``. Each test reads the
module from its archive, checks that it is still the file these tests were written for
(its SHA-256), changes the Celery import lines and nothing else, writes the result to the
test's temp dir and runs it under ``engine run`` as its project runs it. Which modules,
their licences and what else had to change: tests/compat/README.md.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for

TIMEOUT = 30
#: where ``make venv`` puts the archives (``sys.prefix`` is the virtualenv)
ARCHIVES = Path(sys.prefix) / "thirdparty"


@dataclass(frozen=True)
class Upstream:
    archive: str      # the source archive's file name
    member: str       # the module's path inside it
    sha256: str       # of the member as published
    module: str       # the name its project imports it by
    imports: dict     # Celery import line -> ours: the only lines that change


FLOWER = Upstream(
    archive="flower-2.0.1.tar.gz", member="flower-2.0.1/docs/tasks.py",
    sha256="7ae311157f200f81f380f77af90f508649b96423a3dd630165f863337b05b44b",
    module="tasks",
    imports={"from celery import Celery": "from engine import Engine as Celery"})

OTEL = Upstream(
    archive="opentelemetry_instrumentation_celery-0.66b2.tar.gz",
    member="opentelemetry_instrumentation_celery-0.66b2/tests/celery_test_tasks.py",
    sha256="b14711daf1fc32b2b83e311d6c95c4c41f0adb1f41cf853f5c2e439daf0c241e",
    module="celery_test_tasks",
    imports={"from celery import Celery": "from engine import Engine as Celery"})


def upstream_text(up: Upstream) -> str:
    path = ARCHIVES / up.archive
    if not path.exists():
        pytest.fail(f"{path} is missing: `make venv` downloads it "
                    f"(tests/compat/thirdparty/requirements.txt)")
    with tarfile.open(path) as archive:
        data = archive.extractfile(up.member).read()
    assert hashlib.sha256(data).hexdigest() == up.sha256, \
        f"{up.archive}:{up.member} is not the file these tests were written for"
    return data.decode("utf-8")


def ported(text: str, imports: dict) -> str:
    """``text`` with each Celery import line (a whole line, there exactly once) replaced by
    ours, and nothing else changed."""
    lines = text.splitlines(keepends=True)
    bare = [line.rstrip("\r\n") for line in lines]
    for old in imports:
        assert bare.count(old) == 1, f"{old!r} is not in the module exactly once"
    return "".join(imports[b] + line[len(b):] if b in imports else line
                   for line, b in zip(lines, bare))


def unported(text: str, imports: dict) -> str:
    """The inverse: our import lines back to Celery's."""
    return ported(text, {new: old for old, new in imports.items()})


@pytest.mark.parametrize("up", [FLOWER, OTEL], ids=lambda up: up.archive)
def test_only_the_import_lines_change(up):
    """The module the tests run differs from the published one in its import lines alone:
    mapped back, it hashes to the published file's SHA-256."""
    text = upstream_text(up)
    new = ported(text, up.imports)
    assert new != text
    changed = [a for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert changed == list(up.imports)
    assert hashlib.sha256(unported(new, up.imports).encode()).hexdigest() == up.sha256


def test_ported_refuses_a_module_without_the_import():
    with pytest.raises(AssertionError, match="exactly once"):
        ported("import os\n", {"from celery import Celery": "from engine import Engine"})
    with pytest.raises(AssertionError, match="exactly once"):
        ported("from celery import Celery\n" * 2,
               {"from celery import Celery": "from engine import Engine"})


@pytest.fixture
def load(env, tmp_path):
    """Write an upstream module, ported, to this test's dir; import it here; return it and
    the environment a worker needs to import it too."""
    directory = tmp_path / "thirdparty"
    directory.mkdir()
    loaded = []

    def load(up: Upstream):
        (directory / f"{up.module}.py").write_text(ported(upstream_text(up), up.imports),
                                                   encoding="utf-8")
        sys.path.insert(0, str(directory))
        importlib.invalidate_caches()
        sys.modules.pop(up.module, None)   # never another module of that name
        module = importlib.import_module(up.module)
        assert Path(module.__file__).parent == directory
        loaded.append(up.module)
        return module, {"PYTHONPATH": f"{directory}:{env['PYTHONPATH']}"}

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
    if str(directory) in sys.path:
        sys.path.remove(str(directory))


@pytest.fixture
def backend_env(redis_server, monkeypatch):
    """The modules name result backends that are not ours ("amqp://", "rpc"): the engine's
    variable wins over a URL set in code, for the worker and for this process, as
    ENGINE_BROKER_URL (set by ``env``) does for the broker."""
    monkeypatch.setenv("ENGINE_RESULT_BACKEND", redis_server.url)
    return {"ENGINE_RESULT_BACKEND": redis_server.url}


def test_flower_docs_tasks_run_as_flowers_api_calls_them(load, backend_env, run_worker):
    """Flower's docs/tasks.py, called as Flower's API notebook (docs/api.ipynb) calls it:
    tasks sent by name (``async-apply``, ``apply``), a result read by id, the 30-second
    ``sub`` revoked with terminate=True while it runs, a rate limit set on ``tasks.add``."""
    tasks, path = load(FLOWER)
    app = tasks.celery
    app.close()
    try:
        # prefork: a terminated task's process is ended
        run_worker("--pool", "prefork", "-c", "1", "-n", "flower@compat",
                   app="tasks:celery", extra_env=dict(path, **backend_env))
        assert sorted(n for n in app.tasks if n.startswith("tasks.")) == ["tasks.add",
                                                                          "tasks.sub"]
        # async-apply, then result by id
        sent = app.send_task("tasks.add", args=[1, 2])
        assert app.AsyncResult(sent.id).get(timeout=TIMEOUT) == 3
        assert app.AsyncResult(sent.id).state == "SUCCESS"
        # apply (send and wait), here through the module's own task
        assert tasks.add.delay(1, 2).get(timeout=TIMEOUT) == 3

        # revoke a running sub
        running = app.send_task("tasks.sub", args=[1, 2])
        wait_for(lambda: any(job.get("id") == running.id
                             for jobs in (app.control.inspect(timeout=2).active() or {})
                             .values() for job in jobs),
                 message="tasks.sub running")
        app.control.revoke(running.id, terminate=True)
        wait_for(lambda: running.state == "REVOKED", message="tasks.sub revoked")
        with pytest.raises(Exception) as raised:
            running.get(timeout=TIMEOUT)
        assert type(raised.value).__name__ == "TaskRevokedError"

        # rate-limit: the worker says it is set, and add still runs
        replies = app.control.rate_limit("tasks.add", "10", destination=["flower@compat"],
                                         reply=True, timeout=5)
        assert replies and all("ok" in reply for answer in replies
                               for reply in answer.values()), replies
        assert tasks.add.delay(2, 2).get(timeout=TIMEOUT) == 4
    finally:
        app.close()


def test_opentelemetry_celery_test_tasks_run(load, backend_env, run_worker):
    """The task module of opentelemetry-instrumentation-celery's tests, called as its
    tests/test_tasks.py calls it: ``task_add.delay(1, 2)``, ``task_raises.delay()`` failing
    with its own ``CustomError``, ``task_returns_baggage.delay()``."""
    tasks, path = load(OTEL)
    tasks.app.close()
    try:
        run_worker("--pool", "threads", "-c", "2", app="celery_test_tasks:app",
                   extra_env=dict(path, **backend_env))
        result = tasks.task_add.delay(1, 2)
        assert result.get(timeout=TIMEOUT) == 3
        assert result.state == "SUCCESS"

        failed = tasks.task_raises.delay()
        with pytest.raises(tasks.CustomError, match="The task failed!"):
            failed.get(timeout=TIMEOUT)
        assert failed.state == "FAILURE"

        # no baggage set in this process: an empty one comes back
        assert tasks.task_returns_baggage.delay().get(timeout=TIMEOUT) == {}
    finally:
        tasks.app.close()
